"""Fuzzing the two decoders at the edge: the candle decoder (``parse_candle``) and the control decoder
(``decode_json_object``, ``verify_message``). Over 10,000 generated messages (random bytes, random
JSON, mutated valid messages), nothing escapes but the module's own refusal, and every refusal
names a kind and a reason.

The control tests call only the public functions with a plain secret; a change of their signatures
should only need ``_control`` below to change.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.settings import CandleRules
from bse_predict.control.messages import (
    COMMANDS,
    ControlRefused,
    decode_json_object,
    encode_message,
    format_issued_at,
    verify_message,
)
from bse_predict.integrity.signing import sign_fields
from bse_predict.errors import InvalidCandle
from bse_predict.candles.schema import Candle, parse_candle

RULES = CandleRules()
NOW_MS = 1_735_700_000_000
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
SECRET = "fuzz-secret"
VALID = {"symbol": "BTCUSDT", "timeframe": "1h", "open_time": 1_735_689_600_000, "open": 93429.1,
         "high": 93800.0, "low": 93300.5, "close": 93576.0, "volume": 812.4, "closed": True}
FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}

_SCALARS = (st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=12)
            | st.sampled_from([0, -0.0, 1e308, 5e-324, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, "", "1h", "BTCUSDT"]))
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=6)


def _mutate_bytes(draw: st.DrawFn, raw: bytes) -> bytes:
    """Maybe cut, overwrite or insert a few bytes."""
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(raw)))
        how = draw(st.sampled_from(["cut", "set", "insert"]))
        piece = draw(st.binary(min_size=1, max_size=3))
        raw = raw[:at] if how == "cut" else raw[:at] + piece + raw[at + (len(piece) if how == "set" else 0):]
    return raw


def _object_text(pairs: list[tuple[str, object]], ascii_only: bool) -> str:
    """A JSON object from pairs (a key may repeat); NaN and Infinity written as json.dumps writes them."""
    return "{" + ",".join(f"{json.dumps(k, ensure_ascii=ascii_only)}:{json.dumps(v, ensure_ascii=ascii_only)}"
                          for k, v in pairs) + "}"


# -- the candle decoder -----------------------------------------------------------------------------------

_KEYS = st.sampled_from([b"BTCUSDT"] * 6 + [None, b"", b"ETHUSDT", b"\xff"]) | st.binary(max_size=24)
_NOWS = st.sampled_from([NOW_MS] * 6 + [0, VALID["open_time"], VALID["open_time"] + 3_600_000]) | st.integers(0, 2**62)
_NUMERIC = ["open_time", "open", "high", "low", "close", "volume"]
_ODD_NUMBERS = (st.floats() | st.integers(-(2**70), 2**70) | st.floats(1e-12, 1e12)
                | st.sampled_from([0.0, 1e-300, 1e308, 2.0**70, -1.0, 5e-324, 1e-11, 2e10, 1e16, 93576.0 * 25]))


@st.composite
def _mutated_candle(draw: st.DrawFn) -> bytes:
    pairs = list(VALID.items())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(pairs) - 1)) if pairs else 0
        match draw(st.sampled_from(["replace", "number", "number", "scale", "wick", "hour", "drop", "add", "repeat"])):
            case "replace" if pairs:
                pairs[at] = (pairs[at][0], draw(_JSON))
            case "number":  # a numeric field (back if it was dropped), within or beyond the plausible
                name = draw(st.sampled_from(_NUMERIC))
                pairs = [(k, v) for k, v in pairs if k != name] + [(name, draw(_ODD_NUMBERS))]
            case "scale":  # every price by one factor: consistent, maybe absurd
                factor = draw(st.sampled_from([1e-300, 1e-15, 1e-5, 1e5, 1e15, 1e300]) | st.floats(1e-20, 1e20))
                pairs = [(k, v * factor if k in _NUMERIC[1:5] and isinstance(v, float) else v) for k, v in pairs]
            case "wick":  # the high alone, up to a 10,000-fold wick
                pairs = [(k, v * draw(st.floats(1.0, 1e4)) if k == "high" and isinstance(v, float) else v)
                         for k, v in pairs]
            case "hour":  # an aligned open time around now
                pairs = [(k, NOW_MS - NOW_MS % 3_600_000 + draw(st.integers(-3, 3)) * 3_600_000 if k == "open_time" else v)
                         for k, v in pairs]
            case "drop" if pairs:
                del pairs[at]
            case "add":
                pairs.insert(at, (draw(st.text(max_size=8) | st.sampled_from(sorted(VALID))), draw(_JSON)))
            case "repeat" if pairs:
                pairs.insert(draw(st.integers(0, len(pairs))), (pairs[at][0], draw(_JSON | st.just(pairs[at][1]))))
    raw = _object_text(pairs, draw(st.booleans())).encode()
    return _mutate_bytes(draw, raw) if draw(st.booleans()) else raw


def _decode_candle(raw: bytes, key: bytes | None, now_ms: int) -> None:
    try:
        candle = parse_candle(raw, RULES, now_ms, key)
    except InvalidCandle as refused:
        assert isinstance(refused.kind, str) and refused.kind and refused.reason, repr(refused)
        return
    assert isinstance(candle, Candle)


@settings(max_examples=2000, **FUZZ)
@given(st.binary(max_size=300) | st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4), st.integers(1, 1500)),
       _KEYS, _NOWS)
@pytest.mark.slow
def test_random_bytes_are_refused_by_the_candle_decoder(raw: bytes, key: bytes | None, now_ms: int) -> None:
    _decode_candle(raw, key, now_ms)


@settings(max_examples=2000, **FUZZ)
@given(_JSON | st.dictionaries(st.sampled_from(sorted(VALID)) | st.text(max_size=6), _SCALARS | _JSON, max_size=10),
       st.booleans(), _KEYS, _NOWS)
@pytest.mark.slow
def test_random_json_is_refused_by_the_candle_decoder(value: object, ascii_only: bool, key: bytes | None,
                                                      now_ms: int) -> None:
    _decode_candle(json.dumps(value, ensure_ascii=ascii_only).encode(), key, now_ms)


@settings(max_examples=3000, **FUZZ)
@given(_mutated_candle(), _KEYS, _NOWS)
@pytest.mark.slow
def test_mutated_candles_are_parsed_or_refused(raw: bytes, key: bytes | None, now_ms: int) -> None:
    _decode_candle(raw, key, now_ms)


# -- the control decoder ----------------------------------------------------------------------------------

def _control(raw: bytes | None) -> None:
    for decode in (lambda: decode_json_object(raw), lambda: verify_message(raw, SECRET, NOW)):
        try:
            decode()
        except ControlRefused as refused:
            assert isinstance(refused.kind, str) and refused.kind and refused.reason, repr(refused)


@st.composite
def _signed_control(draw: st.DrawFn) -> bytes:
    """A control message with fuzzed fields, signed with the secret so that the checks after the
    signature are reached too; sometimes its bytes are mutated after signing."""
    fields: dict[str, object] = {
        "id": draw(st.text(min_size=1, max_size=10) | st.just("c7b1")),
        "issued_at": format_issued_at(NOW - timedelta(seconds=draw(st.integers(-600, 600)))),
        "issued_by": "fuzz",
        "command": draw(st.sampled_from(COMMANDS) | st.text(max_size=8)),
        "args": draw(st.dictionaries(st.sampled_from(["version", "variants", "shares", "every_s", "passed", "reason"]),
                                     _JSON | st.dictionaries(st.text(max_size=6), _SCALARS, max_size=3), max_size=3)),
    }
    if draw(st.booleans()):
        fields["key_id"] = draw(_JSON | st.just("k1"))
    for name in draw(st.lists(st.sampled_from(["id", "issued_at", "issued_by", "command", "args", "extra"]), max_size=1)):
        fields[name] = draw(_JSON)
    fields["signature"] = sign_fields(fields, SECRET)
    raw = encode_message(fields)
    return _mutate_bytes(draw, raw) if draw(st.booleans()) else raw


@settings(max_examples=1500, **FUZZ)
@given(st.none() | st.binary(max_size=600) | st.builds(lambda v: json.dumps(v).encode(), _JSON)
       | st.builds(lambda v: json.dumps(v).encode() * 2, st.dictionaries(st.text(max_size=6), _SCALARS, max_size=4)))
@pytest.mark.slow
def test_random_bytes_and_json_are_refused_by_the_control_decoder(raw: bytes | None) -> None:
    _control(raw)


@settings(max_examples=1500, **FUZZ)
@given(_signed_control())
@pytest.mark.slow
def test_signed_fuzzed_control_messages_are_obeyed_or_refused(raw: bytes) -> None:
    _control(raw)
