"""Binance's kline shapes (WebSocket event, combined-stream wrapper, REST row) to the contract's candle."""

from __future__ import annotations

import orjson
import pytest

from bse_predict.candles.schema import parse_candle
from bse_predict.ingest.errors import BadExchangeMessage
from bse_predict.ingest.klines import (Ignored, KlineUpdate, ServerShutdown, SubscriptionAnswer, candle_message,
                                       classify_message, kline_event_update, rest_row_update, stream_name)
from configs.settings import CandleRules

HOUR = 3_600_000
OPEN = 1_735_689_600_000


def _event(closed: bool, **k: object) -> dict:
    # the documented USD-M example, on a 1h candle
    return {"e": "kline", "E": OPEN + 1000, "s": "BTCUSDT",
            "k": {"t": OPEN, "T": OPEN + HOUR - 1, "s": "BTCUSDT", "i": "1h", "f": 100, "L": 200, "o": "93429.1",
                  "c": "93576.0", "h": "93800.0", "l": "93300.5", "v": "812.4", "n": 100, "x": closed,
                  "q": "1.0", "V": "500", "Q": "0.5", "B": "123456", **k}}


def test_a_closed_kline_event_is_the_contract_candle() -> None:
    update = kline_event_update(_event(True))
    assert update.closed and update.close_time_ms == OPEN + HOUR - 1
    assert orjson.loads(candle_message(update.candle)) == {
        "symbol": "BTCUSDT", "timeframe": "1h", "open_time": OPEN, "open": 93429.1, "high": 93800.0,
        "low": 93300.5, "close": 93576.0, "volume": 812.4, "closed": True}


def test_the_message_passes_the_workers_own_validation() -> None:
    raw = candle_message(kline_event_update(_event(False)).candle)
    candle = parse_candle(raw, CandleRules(), OPEN + HOUR, b"BTCUSDT")
    assert candle.closed is False and candle.open_time == OPEN


def test_a_combined_stream_wraps_the_event() -> None:
    message = orjson.dumps({"stream": stream_name("BTCUSDT", "1h"), "data": _event(True)})
    update = classify_message(message)
    assert isinstance(update, KlineUpdate) and update.symbol == "BTCUSDT" and update.closed
    assert stream_name("BTCUSDT", "1h") == "btcusdt@kline_1h"


@pytest.mark.parametrize("message", [
    {"e": "serverShutdown", "E": 1770123456789},
    {"event": {"e": "serverShutdown", "E": 1770123456789}},
    {"stream": "x", "data": {"e": "serverShutdown", "E": 1770123456789}},
])
def test_server_shutdown_is_recognised_in_each_documented_wrapping(message: dict) -> None:
    assert classify_message(orjson.dumps(message)) == ServerShutdown(1770123456789)


def test_subscription_answers_and_other_events() -> None:
    assert classify_message(b'{"result": null, "id": 3}') == SubscriptionAnswer(3, None)
    answer = classify_message(b'{"error": {"code": 2, "msg": "Invalid request"}, "id": 4}')
    assert isinstance(answer, SubscriptionAnswer) and "Invalid request" in (answer.error or "")
    assert isinstance(classify_message(b'{"e": "aggTrade"}'), Ignored)
    assert isinstance(classify_message(b'[1, 2]'), Ignored)


@pytest.mark.parametrize("change", [{"x": "true"}, {"o": "abc"}, {"h": "1.0"}, {"o": "-5"}])
def test_a_kline_that_is_not_a_valid_candle_is_refused(change: dict) -> None:
    with pytest.raises(BadExchangeMessage):
        kline_event_update(_event(True, **change))


def test_a_kline_without_a_field_is_refused() -> None:
    event = _event(True)
    del event["k"]["x"]
    with pytest.raises(BadExchangeMessage, match="'x'"):
        classify_message(orjson.dumps(event))
    with pytest.raises(BadExchangeMessage):
        classify_message(b"not json")


ROW = [OPEN, "93429.10000000", "93800.00000000", "93300.50000000", "93576.00000000", "812.40000000",
       OPEN + HOUR - 1, "7.6e7", 1000, "400.0", "3.7e7", "0"]


def test_a_rest_row_is_closed_only_by_the_exchange_clock() -> None:
    assert rest_row_update("BTCUSDT", "1h", ROW, server_time_ms=OPEN + HOUR).closed
    forming = rest_row_update("BTCUSDT", "1h", ROW, server_time_ms=OPEN + HOUR - 1)
    assert not forming.closed  # close time 59:59.999 not yet before the server time
    assert forming.candle.close == 93576.0 and forming.candle.volume == 812.4


def test_a_short_rest_row_is_refused() -> None:
    with pytest.raises(BadExchangeMessage):
        rest_row_update("BTCUSDT", "1h", ROW[:5], OPEN + HOUR)
