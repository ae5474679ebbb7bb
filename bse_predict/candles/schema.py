"""Messages of the contract (``../shared/CONTRACT.md``) as frozen pydantic models.

Parsing a candle from bytes is the edge of the system: everything that can be
wrong with a message becomes an :class:`~bse_predict.errors.InvalidCandle` with a
short ``kind`` and a human reason, which the worker routes to ``candles.dlq``
(every kind: docs/candles.md). Past the shape, a candle must also be
plausible (:mod:`bse_predict.candles.plausibility`). The wall clock is passed in
(``now_ms``) so this module stays pure.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from configs.settings import TIMEFRAME_MS, CandleRules
from bse_predict.candles.plausibility import check_bounds
from bse_predict.errors import InvalidCandle
from bse_predict.integrity.strict_json import RepeatedKey, no_repeated_keys

__all__ = [
    "Candle",
    "TargetPrediction",
    "ModelRef",
    "RegimeInfo",
    "Prediction",
    "DeadLetter",
    "Outcome",
    "Signal",
    "parse_candle",
    "prediction_id",
]

Signal = Literal["STRONG_BUY", "LONG", "NEUTRAL", "SHORT", "STRONG_SELL"]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Candle(_Message):
    """One candle update; ``closed=False`` is an in-progress update of the forming candle."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    symbol: str
    timeframe: str
    open_time: int
    open: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    low: float = Field(allow_inf_nan=False)
    close: float = Field(allow_inf_nan=False)
    volume: float = Field(allow_inf_nan=False)
    closed: bool = True

    @model_validator(mode="after")
    def _prices_are_consistent(self) -> Candle:
        if min(self.open, self.high, self.low, self.close) <= 0:
            raise PydanticCustomError("bad_price", "prices must be positive")
        if self.low > min(self.open, self.close):
            raise PydanticCustomError("inconsistent_prices", "low is above open or close")
        if self.high < max(self.open, self.close):
            raise PydanticCustomError("inconsistent_prices", "high is below open or close")
        if self.volume < 0:
            raise PydanticCustomError("bad_volume", "volume is negative")
        return self

    @property
    def id(self) -> str:
        return prediction_id(self.symbol, self.timeframe, self.open_time)


def prediction_id(symbol: str, timeframe: str, open_time_ms: int) -> str:
    """The contract's deterministic id: consumers dedupe predictions on it."""
    return f"{symbol}|{timeframe}|{open_time_ms}"


_CHECKS_BY_FIELD = {
    "open": "bad_price",
    "high": "bad_price",
    "low": "bad_price",
    "close": "bad_price",
    "volume": "bad_volume",
    "open_time": "bad_open_time",
    "symbol": "bad_symbol",
    "timeframe": "bad_timeframe",
    "closed": "bad_closed_flag",
}


def _validation_kind(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "message"
    if first["type"] == "missing":
        return "missing_field", f"field {location!r} is missing"
    if not first["loc"]:  # a whole-candle rule: its error type is the kind
        return first["type"], first["msg"]
    return _CHECKS_BY_FIELD.get(location, "bad_field"), f"{location}: {first['msg']}"


def _decode_object(raw: bytes, rules: CandleRules) -> dict[str, object]:
    if len(raw) > rules.max_message_bytes:
        raise InvalidCandle("too_large", f"{len(raw)} bytes is over the {rules.max_message_bytes}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCandle("not_utf8", f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidCandle("not_json", f"not valid JSON: {exc}") from exc
    if not isinstance(decoded, dict):
        raise InvalidCandle("not_object", f"a JSON {type(decoded).__name__} is not a candle object")
    return decoded


def _repeated_key(raw: bytes, fields: dict[str, Any]) -> str | None:
    """A key that some object of the message repeats (orjson keeps the last silently), else None.

    ``fields`` is the validated candle's decoded object. Each JSON string puts at least two ``"`` in
    ``raw`` (more for each ``\\"`` escape), and a repeated key drops at least its own string from
    ``fields``. So, cheapest first:

    1. the keys of ``fields`` and its two string values (symbol and timeframe, strings once valid)
       account for at least ``2 * len(fields) + 4`` quotes; any other string, kept (an extra field's
       text, a nested key) or dropped, adds two more. Exactly that many: no key repeats (the
       contract's message, and any with extra fields that are numbers, booleans or null);
    2. no ``\\u`` escape in ``raw`` (a quote in a string is then ``\\"``, as orjson writes it):
       ``raw`` has as many quotes as ``fields`` re-encoded, or a key repeats;
    3. otherwise the exact, slower check: the standard parser with a hook on every object.
    """
    quotes = raw.count(b'"')
    if quotes == 2 * len(fields) + 4:
        return None
    try:
        encoded = orjson.dumps(fields)
    except orjson.JSONEncodeError as exc:  # nested deeper than orjson writes (254 levels)
        raise InvalidCandle("too_deep", f"nested too deep to check for repeated keys: {exc}") from exc
    if b"\\u" not in raw and quotes == encoded.count(b'"'):
        return None
    return _exact_repeated_key(raw)


def _exact_repeated_key(raw: bytes) -> str | None:
    try:  # orjson read it, so it is at most 254 levels deep (see above): no deep recursion here
        json.loads(raw.decode("utf-8"), object_pairs_hook=no_repeated_keys)
    except RepeatedKey as repeated:
        return repeated.key
    except ValueError as exc:  # JSON orjson takes and the standard parser does not
        raise InvalidCandle("not_json", f"not valid JSON: {str(exc)[:200]}") from exc
    return None


def parse_candle(
    raw: bytes,
    rules: CandleRules,
    now_ms: int,
    key: bytes | None,
    allowed_timeframes: frozenset[str] = frozenset(TIMEFRAME_MS),
) -> Candle:
    """Validate one message of the ``candles`` topic and its Kafka ``key``; raise :class:`InvalidCandle`.

    ``key`` is required: None is a record sent without one (``missing_key``), which the partitioner
    could send anywhere, so that one symbol would have several writers.
    """
    fields = _decode_object(raw, rules)
    try:
        candle = Candle.model_validate(fields)
    except ValidationError as exc:
        raise InvalidCandle(*_validation_kind(exc)) from exc
    repeated = _repeated_key(raw, fields)
    if repeated is not None:
        raise InvalidCandle("duplicate_key", f"key {repeated[:80]!r} appears more than once in one object")
    if not re.fullmatch(rules.symbol_pattern, candle.symbol):
        raise InvalidCandle("bad_symbol", f"symbol {candle.symbol!r} does not match {rules.symbol_pattern}")
    if rules.symbols and candle.symbol not in rules.symbols:
        raise InvalidCandle("symbol_not_listed", f"symbol {candle.symbol!r} is not in candles.symbols")
    if key is None:
        raise InvalidCandle("missing_key", f"the record has no key; candles are keyed by their symbol ({candle.symbol!r})")
    if key.decode("utf-8", "replace") != candle.symbol:
        raise InvalidCandle("key_mismatch", f"message key {key!r} is not the symbol {candle.symbol!r}")
    if candle.timeframe not in allowed_timeframes:
        raise InvalidCandle("bad_timeframe", f"timeframe {candle.timeframe!r} is not one of {sorted(allowed_timeframes)}")
    step_ms = TIMEFRAME_MS[candle.timeframe]
    if candle.open_time % step_ms:
        raise InvalidCandle("misaligned_open_time", f"open_time {candle.open_time} is not aligned to {candle.timeframe}")
    if candle.open_time < rules.min_open_time_ms:
        raise InvalidCandle("open_time_too_old", f"open_time {candle.open_time} is before {rules.min_open_time_ms}")
    if candle.open_time > now_ms + rules.max_future_ms:
        raise InvalidCandle("open_time_in_future", f"open_time {candle.open_time} is more than {rules.max_future_ms} ms ahead of now")
    if candle.closed and candle.open_time + step_ms > now_ms + rules.max_clock_skew_ms:
        raise InvalidCandle("closes_in_future", f"a closed candle that ends at {candle.open_time + step_ms}, "
                                                f"{candle.open_time + step_ms - now_ms} ms after now (allowed: "
                                                f"candles.max_clock_skew_ms={rules.max_clock_skew_ms})")
    check_bounds(candle.open, candle.high, candle.low, candle.close, candle.volume, rules)
    return candle


class TargetPrediction(_Message):
    p_up: float
    p_down: float
    p_none: float
    direction: Literal["up", "down"]
    confidence: float
    signal: Signal

    @model_validator(mode="after")
    def _probabilities_sum_to_one(self) -> TargetPrediction:
        total = self.p_up + self.p_down + self.p_none
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"probabilities sum to {total}, not 1")
        return self


class ModelRef(_Message):
    name: str
    version: str


class RegimeInfo(_Message):
    state: str
    p: float


class Prediction(_Message):
    id: str
    symbol: str
    timeframe: str
    open_time: int
    close: float
    horizon_hours: int
    targets: dict[str, TargetPrediction]
    model: ModelRef
    variant: str = "control"
    degraded: bool = False
    regime: RegimeInfo | None = None
    latency_ms: float


class DeadLetter(_Message):
    """What ``candles.dlq`` carries: the reason, where it came from and the original bytes, the first
    ``candles.dead_letter_keep_bytes`` of them when longer (``truncated``; length and sha256 of the whole)."""

    reason: str
    kind: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    original_b64: str
    original_text: str | None = Field(None, description="the (kept) original bytes when they are UTF-8")
    received_at_ms: int
    original_bytes: int | None = Field(None, description="the length of the whole original value")
    original_sha256: str | None = Field(None, description="hex sha256 of the whole original value")
    truncated: bool = Field(False, description="only the first bytes of the original are kept")


class Outcome(_Message):
    """What ``outcomes`` carries: one prediction's answer for one target, from the candle stream.

    ``resolved_at`` is the UTC epoch milliseconds of the moment the answer became
    known: the close of the candle that touched a barrier, or the horizon's end.
    """

    id: str
    symbol: str
    open_time: int
    target: str
    outcome: Literal["up", "down", "none"]
    resolved_at: int
    model: ModelRef
    variant: str = "control"
    p_up: float
    p_down: float
    p_none: float
    stream: Literal["live", "shadow"] = Field("live", description="the topic that carried the prediction")
