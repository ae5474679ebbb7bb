"""The pages served in-process (Starlette's test client) over a board filled by hand: a call's view lists
every feature's share of its probabilities or says why there is none, and with Redis down (the dashboard's
own Redis reads, on a port nothing listens on) operations, the track record and the call view show the rest
of the page and say what is missing instead of failing."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson
from starlette.testclient import TestClient

from configs.settings import load_settings
from bse_predict.candles.schema import Candle, ModelRef, Prediction
from bse_predict.connections.consumer_lag import PartitionLag
from bse_predict.control.state_machine import ControlState
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.operations import OperationsSection
from bse_predict.dashboard.explanations import OnDemandExplanations
from bse_predict.dashboard.run import operations_section, redis_reads
from bse_predict.dashboard.web import build_app, symbol_events
from bse_predict.explain.errors import ExplanationUnavailable
from bse_predict.explain.explainer import Explainer
from bse_predict.explain.explanation import Explanation, explain_row
from bse_predict.monitoring.drift import WindowPsi
from tests.support.worker_process import free_port
from tests.unit.test_dashboard_board import outcome, prediction
from tests.unit.test_explain_explanation import _hand_made

CALL = prediction("BTCUSDT", 3)


def filled_board() -> Board:
    board = Board(load_settings().dashboard)
    board.add_prediction(CALL)
    board.add_outcome(outcome(CALL, "2%", "up"))
    board.add_control_event({"status": "refused", "command": "promote", "reason": "unknown version v9"})
    return board


async def no_control() -> None:
    return None


async def no_scores() -> dict:
    return {}


async def hand_made_explanation(call: Prediction, target: str) -> Explanation:
    if target == "1%":
        raise ExplanationUnavailable("the stored candles no longer hold this candle's window")
    return explain_row(_hand_made(), 0, call.id, target, ModelRef(name="m", version="v"), {})


def test_a_call_lists_every_feature_or_says_why_there_is_none() -> None:
    web = TestClient(build_app(filled_board(), asyncio.Condition(), no_control, no_scores, hand_made_explanation,
                               None))
    page = web.get(f"/symbol/BTCUSDT/call/{CALL.open_time}?target=2%25")
    assert page.status_code == 200
    assert re.findall(r'data-name="([^"]+)"', page.text) == [
        "range_position_168", "rsi_6", "volatility_24", "regime_p_bull", "hour_sin"]  # all, the largest push first
    assert '<td class="num push">+0.0800</td>' in page.text  # range_position_168: 0.05 - (-0.03)
    assert "up (hit)" in page.text  # the 2% call's outcome beside it
    unexplained = web.get(f"/symbol/BTCUSDT/call/{CALL.open_time}?target=1%25")
    assert unexplained.status_code == 200 and 'id="no-explanation"' in unexplained.text
    assert "no longer hold this candle" in unexplained.text and "data-name" not in unexplained.text
    assert web.get(f"/symbol/BTCUSDT/call/{CALL.open_time + 1}").status_code == 404
    assert web.get(f"/symbol/BTCUSDT/call/{CALL.open_time}?target=3%25").status_code == 400
    assert f'href="/symbol/BTCUSDT/call/{CALL.open_time}?target=2%25"' in web.get("/symbol/BTCUSDT").text


def test_with_redis_down_the_pages_show_the_rest_and_say_what_is_missing(tmp_path: Path) -> None:
    where = f"Redis at redis://127.0.0.1:{free_port()}/0"
    kafka = f"127.0.0.1:{free_port()}"
    settings = load_settings(redis_url=where.removeprefix("Redis at "), models_dir=str(tmp_path), kafka_bootstrap=kafka)
    client, reads = redis_reads(settings)
    explanations = OnDemandExplanations(reads.candles, Explainer(tmp_path), 5.0)
    section, lag = operations_section(settings, client)
    app = build_app(filled_board(), asyncio.Condition(), reads.control, reads.scores, explanations.explain, None,
                    operations=section)
    with TestClient(app) as web:
        operations = web.get("/operations")
        assert operations.status_code == 200 and 'id="control-state-unavailable"' in operations.text
        assert f"{where} did not answer for the control state" in operations.text
        assert "unknown version v9" in operations.text  # the events come from Kafka all the same
        assert 'id="lag-unavailable"' in operations.text  # and Kafka down too: the lag says so
        assert f"Kafka at {kafka} did not answer for the consumer lag" in operations.text
        assert 'id="breakers"' in operations.text
        web.portal.call(lag.close)
        record = web.get("/track-record")
        assert record.status_code == 200 and 'id="live-scores-unavailable"' in record.text
        assert f"{where} did not answer for the live scores" in record.text
        assert re.search(r'<tr data-version="v1" data-target="2%" data-stream="live">', record.text)
        call = web.get(f"/symbol/BTCUSDT/call/{CALL.open_time}?target=2%25")
        assert call.status_code == 200 and f"{where} did not answer for the candle window" in call.text
        assert web.get("/").status_code == 200
        web.portal.call(client.aclose)
    explanations.close()


SHADOW = prediction("BTCUSDT", 3, p_up=0.1, p_down=0.7, version="v2")


def shadowed_board() -> Board:
    board = filled_board()
    board.add_shadow_prediction(SHADOW)
    board.add_outcome(outcome(SHADOW, "2%", "up", stream="shadow"))
    return board


def test_the_shadow_answer_is_shown_beside_the_live_call_labelled_shadow() -> None:
    web = TestClient(build_app(shadowed_board(), asyncio.Condition(), no_control, no_scores, hand_made_explanation,
                               None))
    call = web.get(f"/symbol/BTCUSDT/call/{CALL.open_time}?target=2%25").text
    assert "Shadow: rf v2, never served" in call
    shadow_table = call[call.index('id="shadow-answers"'):]
    assert re.findall(r'<tr class="(\w+)" data-target="([^"]+)">', shadow_table) == [
        ("pending", "1%"), ("miss", "2%"), ("pending", "5%")]  # the shadow called down, the price went up first
    symbol = web.get("/symbol/BTCUSDT?target=2%25").text
    assert '<span class="shadow-label">shadow v2</span> <span class="signal SHORT">SHORT</span>' in symbol
    plain = TestClient(build_app(filled_board(), asyncio.Condition(), no_control, no_scores, hand_made_explanation,
                                 None))
    assert "shadow-answers" not in plain.get(f"/symbol/BTCUSDT/call/{CALL.open_time}?target=2%25").text


def test_the_symbol_page_is_sent_again_when_the_symbol_changes() -> None:
    board = filled_board()
    since = board.revision
    page = TestClient(build_app(board, asyncio.Condition(), no_control, no_scores, hand_made_explanation, None))
    assert f'data-updates="/updates/symbol/BTCUSDT?target=2%25" data-revision="{since}"' in page.get("/symbol/BTCUSDT").text

    async def first_update() -> dict:
        changed = asyncio.Condition()
        events = symbol_events(board, changed, "BTCUSDT", "2%", since, lambda calls: f"{len(calls)} rows")
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.05)
        board.add_prediction(prediction("ETHUSDT", 1))  # another symbol: not sent
        async with changed:
            changed.notify_all()
        await asyncio.sleep(0.05)
        assert not waiting.done()
        board.add_candle(Candle(symbol="BTCUSDT", timeframe="1h", open_time=CALL.open_time, open=100.0, high=104.0,
                                low=99.0, close=103.0, volume=5.0))
        async with changed:
            changed.notify_all()
        event = await asyncio.wait_for(waiting, 5)
        await events.aclose()
        return orjson.loads(event.removeprefix(b"data: "))

    update = asyncio.run(first_update())
    assert update["chart"]["candles"] == [{"time": CALL.open_time // 1000, "open": 100.0, "high": 104.0, "low": 99.0,
                                           "close": 103.0}]
    assert [m["outcome"] for m in update["chart"]["markers"]] == ["up"] and update["calls"] == "1 rows"


def test_operations_shows_breakers_lag_and_drift_per_family_or_says_what_is_missing(tmp_path: Path) -> None:
    settings = load_settings(models_dir=str(tmp_path))
    board = filled_board()
    board.add_control_event({"status": "breaker", "command": "breaker", "version": "v1", "breaker": "open",
                             "worker": "host-7", "at": "2026-01-01T00:00:00Z", "reason": "v1 in host-7 opened: NaN"})

    async def lag() -> list[PartitionLag]:
        return [PartitionLag(0, 40, 0, 100), PartitionLag(1, None, 5, 7)]

    async def psi(version: str, newest_day: int) -> WindowPsi | None:
        assert newest_day == CALL.open_time // 86_400_000  # the newest call's day, not the clock's
        return None if version == "v0" else WindowPsi({"volatility_6": 0.4, "volatility_24": 0.1, "rsi_6": 0.01},
                                                      {"volatility_6": 900})

    async def control() -> ControlState:
        return ControlState(live="v1", fallback="v0")

    section = OperationsSection(settings, lag, psi, lambda: None, "group bse-predict on topic candles")
    web = TestClient(build_app(board, asyncio.Condition(), control, no_scores, hand_made_explanation, None,
                               operations=section))
    page = web.get("/operations").text
    assert re.findall(r'<tr data-version="([^"]+)" data-status="([^"]+)">', page) == [("v0", "closed"), ("v1", "open")]
    assert "host-7" in page and "opened: NaN" in page
    assert re.findall(r'data-partition="(\d+)" data-lag="(\d+)"', page) == [("0", "60"), ("1", "2")]
    assert '<td class="num" id="lag-total">62</td>' in page
    assert "No training bins in its manifest" in page  # v0
    drift = page[page.index('<table class="drift" data-version="v1">'):]
    assert re.findall(r'data-family="(\w+)" data-max="([^"]+)"', drift) == [("volatility", "0.4"), ("rsi", "0.01")]
    assert '<td class="num bad">0.400</td><td class="num">0.250</td>' in drift
