"""A small Telegram Bot API client: ``sendMessage`` and ``sendPhoto`` with Telegram's manners.

- Pacing: a token bucket per chat (about one message a second, short bursts)
  and one for the bot in all (about 30 a second), waited on before each call.
- 429: wait the answer's ``parameters.retry_after`` (the chat's bucket is held
  that long), then try again. 5xx and network errors: exponential backoff.
  Any other 4xx is final (:class:`TelegramRefused`): the same request would
  fail the same way. After ``max_attempts`` tries, :class:`TelegramUnavailable`,
  which says whether any attempt may have been delivered (a 5xx, or a network
  error after the connection was made).
- The token is part of every URL (``/bot<token>/method``), so no URL or
  library error text leaves this module without :meth:`TelegramClient.redact`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from pydantic import SecretStr

from configs.settings import AlertsConfig
from bse_predict.alerts.telegram_pacing import TokenBucket, backoff_delay_s
from bse_predict.alerts.errors import TelegramRefused, TelegramUnavailable

__all__ = ["TelegramClient", "redact"]

log = logging.getLogger(__name__)

_REDACTED = "<bot-token>"


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced."""
    return text.replace(secret, _REDACTED) if secret else text


class TelegramClient:
    """Use as ``async with TelegramClient(...) as client``; one instance per process."""

    def __init__(
        self,
        api_url: str,
        token: SecretStr,
        config: AlertsConfig,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._base = api_url.rstrip("/")
        self._token = token
        self._config = config
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}
        self._all = TokenBucket(config.rate_total_per_s, max(1, int(config.rate_total_per_s)))
        self._session: aiohttp.ClientSession | None = None
        self.attempts = 0  # every HTTP request tried, for logs and tests

    async def __aenter__(self) -> TelegramClient:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._config.request_timeout_s))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    def redact(self, text: str) -> str:
        return redact(text, self._token.get_secret_value())

    async def send_message(self, chat_id: str, text: str, reply_to: int | None = None) -> int:
        """Send HTML ``text``; returns Telegram's message_id. ``reply_to`` makes it a reply."""
        payload: dict[str, Any] = {"chat_id": chat_id, "text": text, "parse_mode": "HTML",
                                   "link_preview_options": {"is_disabled": True}}
        if reply_to is not None:
            payload["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
        result = await self._call("sendMessage", chat_id, lambda: {"json": payload})
        return int(result["message_id"])

    async def send_photo(self, chat_id: str, png: bytes, caption: str) -> int:
        """Send a PNG (multipart upload) with an HTML caption; returns the message_id."""

        def form() -> dict[str, Any]:
            data = aiohttp.FormData()
            data.add_field("chat_id", chat_id)
            data.add_field("caption", caption)
            data.add_field("parse_mode", "HTML")
            data.add_field("photo", png, filename="summary.png", content_type="image/png")
            return {"data": data}

        result = await self._call("sendPhoto", chat_id, form)
        return int(result["message_id"])

    async def _pace(self, chat_id: str) -> TokenBucket:
        bucket = self._buckets.setdefault(
            chat_id, TokenBucket(self._config.rate_per_chat_per_s, self._config.burst_per_chat))
        while True:
            now = self._clock()
            wait = max(bucket.wait_s(now), self._all.wait_s(now))
            if wait <= 0:
                bucket.take(now)
                self._all.take(now)
                return bucket
            await self._sleep(wait)

    async def _call(self, method: str, chat_id: str, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """POST ``method`` until Telegram accepts it, refuses it for good, or the attempts run out."""
        if self._session is None:
            raise RuntimeError("TelegramClient is used outside `async with`")
        url = f"{self._base}/bot{self._token.get_secret_value()}/{method}"
        last = "no attempt made"
        uncertain = False  # an attempt may have been delivered although no 200 came back
        for attempt in range(1, self._config.max_attempts + 1):
            bucket = await self._pace(chat_id)
            self.attempts += 1
            delay = backoff_delay_s(attempt, self._config.backoff_initial_s, self._config.backoff_max_s)
            try:
                async with self._session.post(url, **body()) as response:
                    status = response.status
                    try:
                        answer = await response.json(content_type=None)
                    except ValueError:
                        answer = {}
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"network error {type(exc).__name__}: {self.redact(str(exc)) or 'no detail'}"
                uncertain |= not isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
            else:
                answer = answer if isinstance(answer, dict) else {}
                description = self.redact(str(answer.get("description", "")))[:300]
                if status == 200 and answer.get("ok") and isinstance(answer.get("result"), dict):
                    return answer["result"]
                if status == 429:
                    retry_after = (answer.get("parameters") or {}).get("retry_after")
                    delay = float(retry_after) if isinstance(retry_after, int | float) else delay
                    bucket.hold(self._clock(), delay)  # the next _pace waits it out
                    last = f"429 {description or 'Too Many Requests'}"
                elif status >= 500:
                    last = f"{status} {description}"
                    uncertain = True
                else:
                    raise TelegramRefused(method, chat_id, status, description or "no description")
            if attempt == self._config.max_attempts:
                break
            log.warning("%s to chat %s: %s; attempt %d of %d, next in %.1f s",
                        method, chat_id, last, attempt, self._config.max_attempts, delay)
            if not last.startswith("429"):
                await self._sleep(delay)
        raise TelegramUnavailable(
            f"{method} to chat {chat_id} failed {self._config.max_attempts} times, last: {last}", uncertain)
