"""The pages served in-process (Starlette's test client) over a board filled by hand: a call's view lists
every feature's share of its probabilities or says why there is none; the track record shows the chosen
period, the reliability diagram, the equity of the signals and the challenger test; and with Redis down (the dashboard's
own Redis reads, on a port nothing listens on) operations, the track record and the call view show the rest
of the page and say what is missing instead of failing."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from configs.settings import load_settings
from bse_predict.candles.schema import Candle, ModelRef, Prediction
from bse_predict.connections.consumer_lag import PartitionLag
from bse_predict.control.state_machine import ControlState
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.errors import SourceUnavailable
from bse_predict.dashboard.operations import OperationsSection
from bse_predict.dashboard.explanations import OnDemandExplanations
from bse_predict.dashboard.run import operations_section, redis_reads
from bse_predict.dashboard.web import build_app, symbol_events
from bse_predict.explain.errors import ExplanationUnavailable
from bse_predict.explain.explainer import Explainer
from bse_predict.explain.explanation import Explanation, explain_row
from bse_predict.monitoring.challenger_evidence import ChallengerStanding, standing
from bse_predict.monitoring.drift import WindowPsi
from bse_predict.monitoring.sequential import Evidence, add_differences, e_values
from tests.support.worker_process import free_port
from tests.unit.test_dashboard_board import outcome, prediction
from tests.unit.test_explain_explanation import _hand_made

CALL = prediction("BTCUSDT", 3)
COST_PCT = 0.14


def filled_board() -> Board:
    board = Board(load_settings().dashboard, COST_PCT)
    board.add_prediction(CALL)
    board.add_outcome(outcome(CALL, "2%", "up"))
    board.add_control_event({"status": "refused", "command": "promote", "reason": "unknown version v9"})
    return board


async def no_control() -> None:
    return None


async def no_scores() -> dict:
    return {}


async def no_challenger(live: str, shadow: str) -> tuple[ChallengerStanding, ...]:
    return ()


async def hand_made_explanation(call: Prediction, target: str) -> Explanation:
    if target == "1%":
        raise ExplanationUnavailable("the stored candles no longer hold this candle's window")
    return explain_row(_hand_made(), 0, call.id, target, ModelRef(name="m", version="v"), {})


def test_a_call_lists_every_feature_or_says_why_there_is_none() -> None:
    web = TestClient(build_app(filled_board(), asyncio.Condition(), no_control, no_scores, hand_made_explanation,
                               None, read_challenger=no_challenger))
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
                    read_challenger=reads.challenger, operations=section)
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
        assert re.search(r'<tr data-version="v1" data-variant="control" data-target="2%" data-stream="live">', record.text)
        assert 'id="challenger-unavailable"' in record.text  # the control state is read first: it says so
        assert f"{where} did not answer for the control state" in record.text
        assert 'id="reliability"' in record.text and 'id="equity"' in record.text  # from Kafka all the same
        with pytest.raises(SourceUnavailable, match=f"{where} did not answer for the challenger evidence"):
            web.portal.call(reads.challenger, "v1", "v2")
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
                               None, read_challenger=no_challenger))
    call = web.get(f"/symbol/BTCUSDT/call/{CALL.open_time}?target=2%25").text
    assert "Shadow: rf v2, never served" in call
    shadow_table = call[call.index('id="shadow-answers"'):]
    assert re.findall(r'<tr class="(\w+)" data-target="([^"]+)">', shadow_table) == [
        ("pending", "1%"), ("miss", "2%"), ("pending", "5%")]  # the shadow called down, the price went up first
    symbol = web.get("/symbol/BTCUSDT?target=2%25").text
    assert '<span class="shadow-label">shadow v2</span> <span class="signal SHORT">SHORT</span>' in symbol
    plain = TestClient(build_app(filled_board(), asyncio.Condition(), no_control, no_scores, hand_made_explanation,
                                 None, read_challenger=no_challenger))
    assert "shadow-answers" not in plain.get(f"/symbol/BTCUSDT/call/{CALL.open_time}?target=2%25").text


def test_the_symbol_page_is_sent_again_when_the_symbol_changes() -> None:
    board = filled_board()
    since = board.revision
    page = TestClient(build_app(board, asyncio.Condition(), no_control, no_scores, hand_made_explanation, None,
                                read_challenger=no_challenger))
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
                               read_challenger=no_challenger, operations=section))
    page = web.get("/operations").text
    assert re.findall(r'<tr data-version="([^"]+)" data-status="([^"]+)">', page) == [("v0", "closed"), ("v1", "open")]
    assert "host-7" in page and "opened: NaN" in page
    assert re.findall(r'data-partition="(\d+)" data-lag="(\d+)"', page) == [("0", "60"), ("1", "2")]
    assert '<td class="num" id="lag-total">62</td>' in page
    assert "No training bins in its manifest" in page  # v0
    drift = page[page.index('<table class="drift" data-version="v1">'):]
    assert re.findall(r'data-family="(\w+)" data-max="([^"]+)"', drift) == [("volatility", "0.4"), ("rsi", "0.01")]
    assert '<td class="num bad">0.400</td><td class="num">0.250</td>' in drift


def _record_board() -> Board:
    """48 hours of BTCUSDT: candles, calls (LONG on every target) and each 2% call's outcome."""
    board = Board(load_settings().dashboard, COST_PCT)
    for hour in range(48):
        call = prediction("BTCUSDT", hour)
        board.add_candle(Candle(symbol="BTCUSDT", timeframe="1h", open_time=call.open_time, open=call.close,
                                high=call.close, low=call.close, close=call.close, volume=1.0))
        board.add_prediction(call)
        board.add_outcome(outcome(call, "2%", ("up", "down", "up")[hour % 3]))
    return board


def test_the_track_record_shows_the_period_reliability_equity_and_the_challenger() -> None:
    board = _record_board()
    evidence = add_differences(Evidence(), [0.3] * 40 + [-0.1] * 10)

    async def control() -> ControlState:
        return ControlState(live="v1", shadow="v2")

    async def challenger(live: str, shadow: str) -> tuple[ChallengerStanding, ...]:
        assert (live, shadow) == ("v1", "v2")
        return (standing("v1", "v2", False, evidence, "challenger_better", 0.05, 5.0, 20_000),)

    web = TestClient(build_app(board, asyncio.Condition(), control, no_scores, hand_made_explanation, None,
                               read_challenger=challenger))
    page = web.get("/track-record?period=24h")
    assert page.status_code == 200
    assert 'data-updates="/updates/track-record?period=24h"' in page.text  # the live section keeps the period
    assert 'data-period="24h"' in page.text and '<a href="?period=24h" class="current">' in page.text
    counts = re.findall(r'data-stream="live"><td>v1</td><td>control</td><td>2%</td><td>live</td>'
                        r'<td class="num" data-value="(\d+)">', page.text)
    assert counts == ["24"]  # the outcomes of the newest 24 candle hours
    assert re.findall(r'data-stream="live"><td>v1</td><td>control</td><td>2%</td><td>live</td>'
                      r'<td class="num" data-value="(\d+)">', web.get("/track-record").text) == ["48"]
    figure = page.text.split('id="reliability"')[1].split("</div>")[0]
    (calibration,) = [r.calibration for r in board.track_record.records(24).values()]
    assert figure.count("<circle") == len(calibration) > 0
    (equity,) = board.equity.series(*board.track_record.span_ms(24)).values()
    row = re.search(r'<tr data-version="v1" data-variant="control" data-target="2%" data-trades="(\d+)" '
                    r'data-total="([^"]+)">', page.text)
    # The calls of hours 44 to 47 wait for the candle 4 h later that priced their outcome (not on the board).
    assert row is not None and int(row[1]) == equity.trades == 20
    assert board.waiting_trades(*board.track_record.span_ms(24)) == {("v1", "control", "2%"): 4}
    assert re.search(r'%</td><td class="num">4</td>\s*<td><svg class="equity"', page.text)  # the waiting column
    # LONG on every call; "up" touched in the candle 4 h later, which opened at 104 + h, past the barrier
    # 1.02 (100 + h): filled at that open; "down" at the barrier, -2 %
    by_hand = sum(-2.0 if h % 3 == 1 else (104 + h) / (100 + h) * 100 - 100 for h in range(24, 44)) - 20 * COST_PCT
    assert float(row[2]) == equity.total_net_pct == pytest.approx(by_hand, rel=1e-12)
    assert "<polyline" in page.text
    test = page.text.split('id="challenger-test"')[1]
    better, worse = e_values(evidence)
    assert f'data-pairs="50" data-better="{better}" data-worse="{worse}"' in test
    assert "challenger better" in test and ">40</td>" in test  # 2 / alpha
    assert web.get("/track-record?period=8d").status_code == 400
    assert "longer than the 168 h" in web.get("/track-record?period=8d").text
    assert web.get("/updates/track-record?period=soon").status_code == 400


def test_without_a_shadow_there_is_no_challenger_to_show() -> None:
    async def control() -> ControlState:
        return ControlState(live="v1")

    async def challenger(live: str, shadow: str) -> tuple[ChallengerStanding, ...]:
        raise AssertionError("not read without a shadow")

    web = TestClient(build_app(filled_board(), asyncio.Condition(), control, no_scores, hand_made_explanation, None,
                               read_challenger=challenger))
    page = web.get("/track-record")
    assert 'id="no-challenger"' in page.text and "v1 is live and no version is the shadow" in page.text
