"""Candle validation at the edge: every rule has its kind, valid candles pass untouched."""

from __future__ import annotations

import orjson
import pytest

from configs.settings import CandleRules
from bse_predict.errors import InvalidCandle
from bse_predict.candles.schema import Candle, Prediction, TargetPrediction, parse_candle

NOW_MS = 1_735_700_000_000
VALID = {"symbol": "BTCUSDT", "timeframe": "1h", "open_time": 1_735_689_600_000, "open": 93429.1,
         "high": 93800.0, "low": 93300.5, "close": 93576.0, "volume": 812.4, "closed": True}


def _parse(raw: bytes, key: bytes | None = b"BTCUSDT") -> Candle:
    return parse_candle(raw, CandleRules(), NOW_MS, key)


def test_the_contract_example_parses() -> None:
    candle = _parse(orjson.dumps(VALID))
    assert candle.close == 93576.0 and candle.closed is True
    assert candle.id == "BTCUSDT|1h|1735689600000"


def test_closed_defaults_to_true_and_unknown_fields_are_ignored() -> None:
    fields = {k: v for k, v in VALID.items() if k != "closed"} | {"exchange": "binance"}
    assert _parse(orjson.dumps(fields)).closed is True


def test_integer_prices_are_accepted() -> None:
    assert _parse(orjson.dumps(VALID | {"open": 93429, "high": 93800})).open == 93429.0


@pytest.mark.parametrize(
    ("kind", "raw", "key"),
    [
        ("not_json", b"{oops", b"BTCUSDT"),
        ("not_utf8", b"\xc3\x28", b"BTCUSDT"),
        ("not_object", b'"a string"', b"BTCUSDT"),
        ("too_large", b" " * 5000, b"BTCUSDT"),
        ("missing_field", orjson.dumps({k: v for k, v in VALID.items() if k != "close"}), b"BTCUSDT"),
        ("bad_price", orjson.dumps(VALID | {"close": "93576"}), b"BTCUSDT"),
        ("bad_price", orjson.dumps(VALID | {"open": True}), b"BTCUSDT"),
        ("bad_price", orjson.dumps(VALID | {"low": 0.0}), b"BTCUSDT"),
        ("not_json", b'{"symbol":"BTCUSDT","timeframe":"1h","open_time":1735689600000,"open":1e999}', b"BTCUSDT"),  # infinity
        ("inconsistent_prices", orjson.dumps(VALID | {"low": 93500.0}), b"BTCUSDT"),
        ("inconsistent_prices", orjson.dumps(VALID | {"high": 93500.0}), b"BTCUSDT"),
        ("bad_volume", orjson.dumps(VALID | {"volume": -0.1}), b"BTCUSDT"),
        ("bad_timeframe", orjson.dumps(VALID | {"timeframe": "2h"}), b"BTCUSDT"),
        ("misaligned_open_time", orjson.dumps(VALID | {"open_time": VALID["open_time"] + 1}), b"BTCUSDT"),
        ("bad_open_time", orjson.dumps(VALID | {"open_time": 1.7e12}), b"BTCUSDT"),
        ("open_time_in_future", orjson.dumps(VALID | {"open_time": NOW_MS + 10 * 3_600_000 - NOW_MS % 3_600_000}), b"BTCUSDT"),
        ("open_time_too_old", orjson.dumps(VALID | {"open_time": 3_600_000}), b"BTCUSDT"),
        ("bad_symbol", orjson.dumps(VALID | {"symbol": "btc-usdt"}), b"btc-usdt"),
        ("bad_symbol", orjson.dumps(VALID | {"symbol": "X" * 21}), b"X" * 21),
        ("key_mismatch", orjson.dumps(VALID), b"ETHUSDT"),
        ("bad_closed_flag", orjson.dumps(VALID | {"closed": "false"}), b"BTCUSDT"),
    ],
)
def test_each_broken_rule_is_refused_with_its_kind(kind: str, raw: bytes, key: bytes) -> None:
    with pytest.raises(InvalidCandle) as refused:
        _parse(raw, key)
    assert refused.value.kind == kind
    assert refused.value.reason


def test_timeframes_outside_the_served_one_are_refused() -> None:
    fields = VALID | {"timeframe": "4h", "open_time": 1_735_689_600_000}
    with pytest.raises(InvalidCandle, match="bad_timeframe"):
        parse_candle(orjson.dumps(fields), CandleRules(), NOW_MS, b"BTCUSDT", frozenset({"1h"}))


def test_prediction_probabilities_must_sum_to_one() -> None:
    with pytest.raises(ValueError, match="sum"):
        TargetPrediction(p_up=0.5, p_down=0.5, p_none=0.2, direction="up", confidence=0.5, signal="NEUTRAL")


def test_prediction_round_trips_through_json() -> None:
    part = TargetPrediction(p_up=0.41, p_down=0.44, p_none=0.15, direction="down", confidence=0.44 / 0.85,
                            signal="NEUTRAL")
    prediction = Prediction(id="BTCUSDT|1h|1", symbol="BTCUSDT", timeframe="1h", open_time=1, close=1.0,
                            horizon_hours=72, targets={"1%": part}, model={"name": "m", "version": "v"},
                            latency_ms=0.9)
    assert Prediction.model_validate_json(prediction.model_dump_json()) == prediction
