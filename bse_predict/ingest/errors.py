"""Errors of the ingest package."""

from __future__ import annotations

from bse_predict.errors import BsePredictError

__all__ = ["IngestError", "BadExchangeMessage", "ExchangeRefused"]


class IngestError(BsePredictError):
    """Base of every error the ingest package raises on purpose."""


class BadExchangeMessage(IngestError):
    """A WebSocket message or REST row that is not the documented kline shape, or not a valid candle."""


class ExchangeRefused(IngestError):
    """The exchange answered a request with a client error that retrying cannot fix (an unknown symbol)."""
