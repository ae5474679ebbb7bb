"""Plausible candles: absurd but well-formed messages are refused, each rule with its own kind.

Hand-written cases for every rule, properties (hypothesis) that any violation of a rule is refused
with that rule's kind, the repeated-key check against an exact reference, and the stream refusing a
price jump against the symbol's window.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.settings import CandleRules, load_settings
from bse_predict.candles.plausibility import LastClose, price_jump_refusals
from bse_predict.errors import InvalidCandle
from bse_predict.candles.schema import Candle, parse_candle
from bse_predict.backtest.predictions import CollectingPublisher
from bse_predict.stream.processor import CandleProcessor, RawMessage
from bse_predict.stream.window_store import MemoryWindowStore

HOUR = 3_600_000
NOW_MS = 1_735_700_000_000  # 2025-01-01 02:53:20 UTC
OPEN = 1_735_689_600_000  # 2025-01-01 00:00: closed at 01:00, before NOW_MS
RULES = CandleRules()
VALID = {"symbol": "BTCUSDT", "timeframe": "1h", "open_time": OPEN, "open": 93429.1,
         "high": 93800.0, "low": 93300.5, "close": 93576.0, "volume": 812.4, "closed": True}


def _parse(raw: bytes, key: bytes | None = b"BTCUSDT", now_ms: int = NOW_MS, rules: CandleRules = RULES) -> Candle:
    return parse_candle(raw, rules, now_ms, key)


def _kind(raw: bytes, key: bytes | None = b"BTCUSDT", now_ms: int = NOW_MS) -> str:
    with pytest.raises(InvalidCandle) as refused:
        _parse(raw, key, now_ms)
    assert refused.value.reason
    return refused.value.kind


def _prices(low: float, high: float, close: float | None = None, **extra: object) -> bytes:
    close = low if close is None else close
    return orjson.dumps(VALID | {"open": close, "high": high, "low": low, "close": close} | extra)


@pytest.mark.parametrize(("kind", "raw"), [
    ("price_out_of_bounds", _prices(1e-300, 1e-300)),
    ("price_out_of_bounds", _prices(1e308, 1e308)),
    ("price_out_of_bounds", _prices(93000.0, 2e10, 93000.0)),
    ("volume_out_of_bounds", orjson.dumps(VALID | {"volume": float(2**70)})),
    ("range_too_wide", _prices(10.0, 100_000.0, 10.0)),  # a 10,000-fold wick
    ("range_too_wide", _prices(0.001, 93800.0, 93576.0)),  # down to nothing and back
    ("closes_in_future", orjson.dumps(VALID | {"open_time": OPEN + 2 * HOUR})),  # ends 01:06:40 after now
])
def test_each_bound_is_refused_with_its_kind(kind: str, raw: bytes) -> None:
    assert _kind(raw) == kind


def test_a_record_without_a_key_is_refused() -> None:
    assert _kind(orjson.dumps(VALID), key=None) == "missing_key"
    assert _kind(orjson.dumps(VALID), key=b"") == "key_mismatch"


@pytest.mark.parametrize("raw", [
    b'{"symbol":"BTCUSDT","timeframe":"1h","open_time":1735689600000,"open":93429.1,"high":93800.0,'
    b'"low":93300.5,"close":1e308,"close":93576.0,"volume":812.4}',  # orjson keeps the last close
    b'{"close":93576.0,"symbol":"BTCUSDT","timeframe":"1h","open_time":1735689600000,"open":93429.1,'
    b'"high":93800.0,"low":93300.5,"\\u0063lose":93576.0,"volume":812.4}',  # the same key spelled with an escape
    b'{"symbol":"ETHUSDT","symbol":"BTCUSDT","timeframe":"1h","open_time":1735689600000,"open":93429.1,'
    b'"high":93800.0,"low":93300.5,"close":93576.0,"volume":812.4,"note":"caf\\u00e9"}',
    b'{"symbol":"BTCUSDT","timeframe":"1h","open_time":1735689600000,"open":93429.1,"high":93800.0,'
    b'"low":93300.5,"close":93576.0,"volume":812.4,"source":{"ws":"a","ws":"b"}}',  # inside an extra field
    b'{"symbol":"BTCUSDT","timeframe":"1h","open_time":1735689600000,"open":93429.1,"high":93800.0,'
    b'"low":93300.5,"close":93576.0,"volume":812.4,"trades":5,"trades":6}',  # an extra number twice
])
def test_a_repeated_key_anywhere_is_refused(raw: bytes) -> None:
    assert _kind(raw) == "duplicate_key"


@pytest.mark.parametrize("raw", [
    orjson.dumps(VALID),
    orjson.dumps(VALID | {"exchange": "binance", "trades": 12, "taker": None, "src": {"a": ["x", {"b": "y"}]}}),
    orjson.dumps(VALID | {"note": 'he said "hi" \\ and left', "ids": ["a", "a"]}),  # equal values are no repeat
    json.dumps(VALID | {"note": "caf\u00e9 \u2603 \"q\""}).encode(),  # \u escapes: the exact path
])
def test_messages_without_a_repeated_key_pass(raw: bytes) -> None:
    assert _parse(raw).close == VALID["close"]


def _nested(depth: int, inside: bytes) -> bytes:
    return orjson.dumps(VALID)[:-1] + b',"x":' + b"[" * depth + inside + b"]" * depth + b"}"


def test_nesting_too_deep_to_check_for_repeated_keys_is_refused() -> None:
    assert _kind(_nested(300, b'"a"')) == "too_deep"
    assert _parse(_nested(200, b'"a"')).close == VALID["close"]
    assert _parse(_nested(300, b"1")).close == VALID["close"]  # no string inside: nothing could repeat


def test_a_closed_candle_may_end_within_the_skew_and_a_forming_one_keeps_the_open_time_rule() -> None:
    ends = OPEN + HOUR
    assert _parse(orjson.dumps(VALID), now_ms=ends - RULES.max_clock_skew_ms).closed
    assert _kind(orjson.dumps(VALID), now_ms=ends - RULES.max_clock_skew_ms - 1) == "closes_in_future"
    forming = orjson.dumps(VALID | {"closed": False})
    assert not _parse(forming, now_ms=OPEN).closed  # the hour has just begun
    assert _kind(orjson.dumps(VALID | {"closed": False}), now_ms=OPEN - RULES.max_future_ms - 1) == "open_time_in_future"


def test_bounds_are_settings_and_infinity_turns_one_off() -> None:
    raw = _prices(10.0, 100_000.0, 10.0)
    loose = load_settings(candles={"max_high_low_ratio": float("inf")}).candles
    assert _parse(raw, rules=loose).high == 100_000.0
    with pytest.raises(ValueError, match="min_price"):
        CandleRules(min_price=5.0, max_price=1.0)


# -- the jump against the last close, a pure function over a batch in arrival order --------------------

def _candle(index: int, close: float, closed: bool = True, symbol: str = "BTCUSDT") -> Candle:
    return Candle(symbol=symbol, timeframe="1h", open_time=OPEN + index * HOUR, open=close, high=close,
                  low=close, close=close, volume=1.0, closed=closed)


def _kinds(refusals: list[InvalidCandle | None]) -> list[str | None]:
    return [r.kind if r is not None else None for r in refusals]


def test_a_jump_is_checked_against_the_last_accepted_close_in_sequence() -> None:
    last = {("BTCUSDT", "1h"): LastClose(OPEN, 100.0)}
    batch = [_candle(1, 105.0), _candle(2, 5000.0), _candle(3, 110.0), _candle(4, 9.0), _candle(5, 1.05e3)]
    assert _kinds(price_jump_refusals(batch, last, RULES)) == [None, "price_jump", None, "price_jump", None]


def test_forming_and_late_candles_never_move_the_reference_back() -> None:
    last = {("BTCUSDT", "1h"): LastClose(OPEN + 10 * HOUR, 100.0)}
    batch = [_candle(11, 900.0, closed=False),  # checked and accepted, not a reference
             _candle(11, 1050.0),  # 10.5 times 100 (1.17 times the forming 900)
             _candle(3, 20.0),  # late: checked against the newest, which stays the reference
             _candle(12, 250.0)]  # 2.5 times 100 (12.5 times the late 20)
    assert _kinds(price_jump_refusals(batch, last, RULES)) == [None, "price_jump", None, None]


def test_corrections_of_one_candle_cannot_walk_the_reference_past_the_bound() -> None:
    """From 100: 900 then 8,100 then 72,900 re-sent for the same hour. Each is 9 times the one before; held to
    the candle before that hour, only the first passes, and the real next candle still does."""
    batch = [_candle(10, 900.0), _candle(10, 8100.0), _candle(10, 72900.0), _candle(11, 101.0)]
    in_one_batch = price_jump_refusals(batch, {("BTCUSDT", "1h"): LastClose(OPEN + 9 * HOUR, 100.0)}, RULES)
    assert _kinds(in_one_batch) == [None, "price_jump", "price_jump", None]
    # across batches: the store gives the newest candle (the accepted 900) and the close before it (100)
    stored = {("BTCUSDT", "1h"): LastClose(OPEN + 10 * HOUR, 900.0, previous_close=100.0)}
    assert _kinds(price_jump_refusals([_candle(10, 8100.0), _candle(10, 120.0)], stored, RULES)) == [
        "price_jump", None]


def test_a_symbol_without_history_is_checked_from_its_first_candle_on() -> None:
    batch = [_candle(0, 100.0, symbol="NEWUSDT"), _candle(1, 2000.0, symbol="NEWUSDT"), _candle(1, 2000.0)]
    assert _kinds(price_jump_refusals(batch, {("BTCUSDT", "1h"): LastClose(OPEN, 1000.0)}, RULES)) == [
        None, "price_jump", None]


# -- properties: every violation of a rule is refused with that rule's kind ------------------------------

_RULE_KINDS = ("price_out_of_bounds", "volume_out_of_bounds", "range_too_wide", "closes_in_future", "missing_key",
               "duplicate_key")


@st.composite
def _absurd(draw: st.DrawFn) -> tuple[str, bytes, bytes | None, int]:
    """(kind, raw, key, now_ms): a candle that is sane but for one rule."""
    kind = draw(st.sampled_from(_RULE_KINDS))
    low = draw(st.floats(1e-6, 1e6))
    high = low * draw(st.floats(1.0, 5.0))
    close = draw(st.floats(low, high))
    fields = {**VALID, "open": close, "high": high, "low": low, "close": close,
              "volume": draw(st.floats(0.0, 1e12))}
    now_ms, key = NOW_MS, b"BTCUSDT"
    if kind == "price_out_of_bounds":
        if draw(st.booleans()):
            fields["low"] = fields["open"] = fields["close"] = draw(st.floats(5e-324, RULES.min_price, exclude_max=True))
            fields["high"] = fields["low"] * draw(st.floats(1.0, 5.0))
        else:
            fields["high"] = fields["open"] = fields["close"] = draw(st.floats(RULES.max_price, 1e308, exclude_min=True))
            fields["low"] = fields["high"] / draw(st.floats(1.0, 5.0))
    elif kind == "volume_out_of_bounds":
        fields["volume"] = draw(st.floats(RULES.max_volume, 1e308, exclude_min=True))
    elif kind == "range_too_wide":
        fields["low"] = fields["open"] = fields["close"] = draw(st.floats(1e-4, 1.0))
        fields["high"] = fields["low"] * draw(st.floats(RULES.max_high_low_ratio * 1.0001, 1e9))
    elif kind == "closes_in_future":
        hours_ahead = draw(st.integers(0, RULES.max_future_ms // HOUR))
        fields["open_time"] = NOW_MS - NOW_MS % HOUR + hours_ahead * HOUR
        now_ms = NOW_MS - draw(st.integers(0, HOUR - RULES.max_clock_skew_ms - NOW_MS % HOUR - 1))
    elif kind == "missing_key":
        key = None
    if kind != "duplicate_key":
        return kind, orjson.dumps(fields), key, now_ms
    repeated = draw(st.sampled_from(sorted(fields)))
    pairs = [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in fields.items()]
    pairs.insert(draw(st.integers(0, len(pairs))), f"{json.dumps(repeated)}:{json.dumps(fields[repeated])}")
    return kind, ("{" + ",".join(pairs) + "}").encode(), key, now_ms


@settings(max_examples=600, deadline=None)
@given(_absurd())
def test_every_absurd_candle_is_refused_with_its_rule(case: tuple[str, bytes, bytes | None, int]) -> None:
    kind, raw, key, now_ms = case
    assert _kind(raw, key, now_ms) == kind


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-6, 1e6), st.floats(RULES.max_close_jump_ratio * 1.0001, 1e12), st.booleans(),
       st.booleans())
def test_every_close_beyond_the_jump_bound_is_refused(last: float, ratio: float, up: bool, closed: bool) -> None:
    close = last * ratio if up else last / ratio
    jump = _candle(1, close, closed=closed)
    assert _kinds(price_jump_refusals([jump], {("BTCUSDT", "1h"): LastClose(OPEN, last)}, RULES)) == ["price_jump"]
    within = _candle(1, last * RULES.max_close_jump_ratio ** (1.0 if up else -1.0) * (0.999 if up else 1.001))
    assert _kinds(price_jump_refusals([within], {("BTCUSDT", "1h"): LastClose(OPEN, last)}, RULES)) == [None]


# -- the fast repeated-key check against the exact one -----------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6) | st.sampled_from(
    ['"', '\\', '\\"', 'a"b', "é", "\u2603"])
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
                     | _TEXT, lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(_TEXT, inner), max_size=3),
                     max_leaves=8)


def _write(value: object, ascii_only: bool) -> str:
    """JSON text of ``value``, where a list of (key, value) pairs is an object that may repeat a key."""
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=ascii_only)}:{_write(v, ascii_only)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_write(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def _repeats(value: object) -> bool:
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        keys = [k for k, _ in value]
        return len(set(keys)) < len(keys) or any(_repeats(v) for _, v in value)
    return isinstance(value, list) and any(_repeats(v) for v in value)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(_TEXT, _JSON), max_size=4), st.booleans(), st.booleans())
@pytest.mark.slow
def test_the_fast_repeated_key_check_agrees_with_the_exact_one(extra: list[tuple[str, object]], ascii_only: bool,
                                                                 repeat_a_field: bool) -> None:
    pairs = [(k, v) for k, v in VALID.items()] + [(k, v) for k, v in extra if k not in VALID]
    if repeat_a_field:
        pairs.append(("close", VALID["close"]))
    raw = _write(pairs, ascii_only).encode()
    if _repeats(pairs):
        assert _kind(raw) == "duplicate_key", raw
    else:
        assert _parse(raw).close == VALID["close"], raw


# -- in the stream: a jump against the window becomes a dead letter and stays out of the window ----------

class _NeverEnoughHistory:
    """A predictor whose history is never reached: the batches only fill windows."""

    version, model_name, targets, input_kinds, min_history = "v0", "none", ("1%",), ("features",), 10_000

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - never called
        raise AssertionError("no window is long enough")


async def test_the_stream_sends_a_jump_to_the_dead_letters_and_keeps_it_out_of_the_window() -> None:
    base = load_settings()
    store, publisher = MemoryWindowStore(50), CollectingPublisher()

    def message(index: int, close: float, offset: int) -> RawMessage:
        c = _candle(index, close)
        return RawMessage(b"BTCUSDT", orjson.dumps(c.model_dump()), "candles", 0, offset)

    with ThreadPoolExecutor(max_workers=1) as executor:
        processor = CandleProcessor(base, store, _NeverEnoughHistory(), publisher, executor, clock_ms=lambda: NOW_MS + 30 * HOUR)
        await processor.process([message(0, 100.0, 0), message(1, 101.0, 1)])
        await processor.process([message(2, 5_000.0, 2), message(3, 102.0, 3), message(4, 0.5, 4)])
    assert [(d.kind, d.offset) for d in publisher.dead_letters] == [("price_jump", 2), ("price_jump", 4)]
    assert "last close 101" in publisher.dead_letters[0].reason
    times, ohlcv = await store.closed_candles("BTCUSDT", "1h")
    assert ohlcv[:, 3].tolist() == [100.0, 101.0, 102.0]
    assert processor.counts["dlq.price_jump"] == 2
