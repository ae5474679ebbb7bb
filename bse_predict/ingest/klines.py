"""Binance's kline shapes turned into the contract's candle, and the contract's JSON bytes.

Two sources, one result (:class:`KlineUpdate`):

- the WebSocket kline event (``<symbol>@kline_<interval>``), bare or wrapped by a combined stream as
  ``{"stream": ..., "data": {...}}``; its ``k.x`` says whether the candle is closed;
- a REST row of ``/api/v3/klines`` or ``/fapi/v1/klines``: ``[open time, open, high, low, close, volume,
  close time, quote volume, trades, taker buy base, taker buy quote, ignore]``, prices as strings. A row
  is closed when its close time is before the exchange's server time (:func:`rest_row_update`), never
  by the local clock.

Everything else on a stream connection is classified by :func:`classify_message`: a subscription's
answer, a ``serverShutdown`` event (accepted as ``{"e": ...}``, wrapped in ``"event"`` as the WebSocket
API sends it, or in a combined stream's ``"data"``), or something to ignore.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from bse_predict.candles.schema import Candle
from bse_predict.ingest.errors import BadExchangeMessage

__all__ = ["KlineUpdate", "SubscriptionAnswer", "ServerShutdown", "Ignored", "StreamMessage", "kline_event_update",
           "rest_row_update", "classify_message", "candle_message", "stream_name"]


@dataclass(frozen=True)
class KlineUpdate:
    """One kline as the contract's candle, with the exchange's close time (open + interval - 1 ms)."""

    candle: Candle
    close_time_ms: int

    @property
    def symbol(self) -> str:
        return self.candle.symbol

    @property
    def open_time_ms(self) -> int:
        return self.candle.open_time

    @property
    def closed(self) -> bool:
        return self.candle.closed


@dataclass(frozen=True)
class SubscriptionAnswer:
    request_id: int | str | None
    error: str | None


@dataclass(frozen=True)
class ServerShutdown:
    event_time_ms: int | None


@dataclass(frozen=True)
class Ignored:
    reason: str


StreamMessage = KlineUpdate | SubscriptionAnswer | ServerShutdown | Ignored


def stream_name(symbol: str, timeframe: str) -> str:
    """The kline stream of a symbol: lower case, as Binance requires."""
    return f"{symbol.lower()}@kline_{timeframe}"


def _candle(symbol: Any, timeframe: Any, open_time: Any, ohlcv: Sequence[Any], closed: bool) -> Candle:
    try:
        o, h, l, c, v = (float(x) for x in ohlcv)
        return Candle(symbol=str(symbol).upper(), timeframe=str(timeframe), open_time=int(open_time), open=o,
                      high=h, low=l, close=c, volume=v, closed=closed)
    except (TypeError, ValueError, ValidationError) as exc:
        raise BadExchangeMessage(f"not a valid candle: {str(exc).splitlines()[0]}") from exc


def kline_event_update(event: Mapping[str, Any]) -> KlineUpdate:
    """A WebSocket kline event (the payload, not the combined stream's wrapper)."""
    k = event.get("k")
    if event.get("e") != "kline" or not isinstance(k, Mapping):
        raise BadExchangeMessage(f"not a kline event: e={event.get('e')!r}")
    try:
        closed = k["x"]
        if not isinstance(closed, bool):
            raise BadExchangeMessage(f"kline flag x is {closed!r}, not a boolean")
        candle = _candle(k["s"], k["i"], k["t"], (k["o"], k["h"], k["l"], k["c"], k["v"]), closed)
        return KlineUpdate(candle, int(k["T"]))
    except KeyError as exc:
        raise BadExchangeMessage(f"kline event without field {exc.args[0]!r}") from exc


def rest_row_update(symbol: str, timeframe: str, row: Sequence[Any], server_time_ms: int) -> KlineUpdate:
    """A REST kline row; closed when its close time is before ``server_time_ms`` (the exchange's clock)."""
    if not isinstance(row, Sequence) or isinstance(row, (str, bytes)) or len(row) < 7:
        raise BadExchangeMessage(f"a kline row must be a list of at least 7 fields, got {row!r:.80}")
    close_time_ms = int(row[6])
    return KlineUpdate(_candle(symbol, timeframe, row[0], row[1:6], close_time_ms < server_time_ms), close_time_ms)


def classify_message(raw: str | bytes) -> StreamMessage:
    """What a stream connection received. Raises :class:`BadExchangeMessage` for a kline that does not parse."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadExchangeMessage(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        return Ignored(f"a JSON {type(message).__name__}")
    if "id" in message and ("result" in message or "error" in message):
        error = message.get("error")
        return SubscriptionAnswer(message["id"], None if error is None else str(error))
    payload = message.get("data", message)
    for candidate in (payload, message.get("event"), payload.get("event") if isinstance(payload, dict) else None):
        if isinstance(candidate, dict) and candidate.get("e") == "serverShutdown":
            event_time = candidate.get("E")
            return ServerShutdown(int(event_time) if isinstance(event_time, int) else None)
    if isinstance(payload, dict) and payload.get("e") == "kline":
        return kline_event_update(payload)
    return Ignored(f"event {payload.get('e') if isinstance(payload, dict) else None!r}")


def candle_message(candle: Candle) -> bytes:
    """The contract's ``candles`` value, key order and fields as ``bse-predict replay`` writes them."""
    return orjson.dumps({"symbol": candle.symbol, "timeframe": candle.timeframe, "open_time": candle.open_time,
                         "open": candle.open, "high": candle.high, "low": candle.low, "close": candle.close,
                         "volume": candle.volume, "closed": candle.closed})
