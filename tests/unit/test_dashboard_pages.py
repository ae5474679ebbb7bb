"""The pages served in-process (Starlette's test client) over a board filled by hand: a call's view lists
every feature's share of its probabilities or says why there is none, and with Redis down (the dashboard's
own Redis reads, on a port nothing listens on) operations, the track record and the call view show the rest
of the page and say what is missing instead of failing."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from starlette.testclient import TestClient

from configs.settings import load_settings
from bse_predict.candles.schema import ModelRef, Prediction
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.explanations import OnDemandExplanations
from bse_predict.dashboard.run import redis_reads
from bse_predict.dashboard.web import build_app
from bse_predict.explain.errors import ExplanationUnavailable
from bse_predict.explain.explainer import Explainer
from bse_predict.explain.explanation import Explanation, explain_row
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
    settings = load_settings(redis_url=where.removeprefix("Redis at "), models_dir=str(tmp_path))
    client, reads = redis_reads(settings)
    explanations = OnDemandExplanations(reads.candles, Explainer(tmp_path), 5.0)
    app = build_app(filled_board(), asyncio.Condition(), reads.control, reads.scores, explanations.explain, None)
    with TestClient(app) as web:
        operations = web.get("/operations")
        assert operations.status_code == 200 and 'id="control-state-unavailable"' in operations.text
        assert f"{where} did not answer for the control state" in operations.text
        assert "unknown version v9" in operations.text  # the events come from Kafka all the same
        record = web.get("/track-record")
        assert record.status_code == 200 and 'id="live-scores-unavailable"' in record.text
        assert f"{where} did not answer for the live scores" in record.text
        assert re.search(r'<tr data-version="v1" data-target="2%" data-stream="live">', record.text)
        call = web.get(f"/symbol/BTCUSDT/call/{CALL.open_time}?target=2%25")
        assert call.status_code == 200 and f"{where} did not answer for the candle window" in call.text
        assert web.get("/").status_code == 200
        web.portal.call(client.aclose)
    explanations.close()
