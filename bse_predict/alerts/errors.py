"""Errors of the alerts service; each message is safe to print (no bot token in it)."""

from __future__ import annotations

from bse_predict.errors import BsePredictError

__all__ = ["AlertsError", "AlertsConfigError", "TelegramRefused", "TelegramUnavailable"]


class AlertsError(BsePredictError):
    """Base of the alerts service's errors."""


class AlertsConfigError(AlertsError):
    """The service cannot start: a missing token or chat, a bad API URL."""


class TelegramRefused(AlertsError):
    """Telegram answered a 4xx other than 429: sending the same request again cannot help."""

    def __init__(self, method: str, chat_id: str, status: int, description: str) -> None:
        super().__init__(f"{method} to chat {chat_id} refused with {status}: {description}")
        self.status = status


class TelegramUnavailable(AlertsError):
    """429s, 5xx answers or network errors outlasted every attempt.

    ``may_have_delivered`` is False only when no attempt could have reached
    Telegram's chat: every one was answered 429 or never connected.
    """

    def __init__(self, message: str, may_have_delivered: bool) -> None:
        super().__init__(message)
        self.may_have_delivered = may_have_delivered
