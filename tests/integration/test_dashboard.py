"""``bse-predict dashboard`` as a subprocess against the real Kafka and Redis, driven in real headless
Chromium (Debian's, installed with apt-get when missing; Playwright drives it).

- With messages written by the test and Redis down: the markets page shows a call produced after it
  loaded without a reload, the symbol page draws its chart with one marker per call and the outcome
  joined, the shadow version's answer beside each call, and takes a new candle, a new call and an outcome
  without a reload; operations shows a control event that arrived after it loaded, says the control state
  cannot be read, shows a breaker reported on control.events and the worker group's lag per partition read
  from Kafka; the track record shows what the topics carried and says the live scores cannot be read, and
  a request without the token is refused.
- During a real worker's replay of real candles: see the test's docstring.

Set ``BSE_DASHBOARD_SCREENSHOTS=DIR`` to keep a PNG of each page of the replay (docs/dashboard/ holds the
ones shown in docs/dashboard.md)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
import pytest

from configs.settings import Settings
from bse_predict.backtest.trading import side_of, simulate_brackets
from bse_predict.candles.files import CandleSeries
from bse_predict.candles.grid import fill_gaps
from bse_predict.candles.schema import Prediction
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.control.messages import build_message, encode_message
from bse_predict.dashboard.views import utc_text
from bse_predict.explain.explainer import Explainer
from bse_predict.serving.manifest import load_manifest
from bse_predict.serving.signals import target_pct
from bse_predict.services.debian_packages import debian_program
from bse_predict.stream.replay import candle_records, replay
from tests.support.kafka_io import read_topic, read_until, send_raw
from tests.support.worker_process import CommandProcess, WorkerProcess, free_port, service_env
from tests.unit.test_dashboard_board import outcome, prediction

pytestmark = pytest.mark.integration

T = TypeVar("T")
TOKEN = "a-dashboard-token-for-the-test"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class DashboardProcess(CommandProcess):
    command = "dashboard"

    def __init__(self, env: dict[str, str], log_path: Path, port: int) -> None:
        super().__init__({**env, "BSE_DASHBOARD_TOKEN": TOKEN}, log_path, ("--port", str(port)))
        self.url = f"http://127.0.0.1:{port}"

    def ready(self) -> bool:
        return status(self.url + "/", {"Authorization": f"Bearer {TOKEN}"}) == 200


def status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on a thread of its own: Playwright's sync API runs an event loop in the test's thread."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def produce(settings: Settings, topic: str, messages: list[tuple[str, dict | bytes]]) -> None:
    in_thread(send_raw(settings, topic, [(key.encode(), m if isinstance(m, bytes) else orjson.dumps(m))
                                         for key, m in messages]))


def candle(symbol: str, hour: int) -> dict:
    price = 100.0 + hour
    return {"symbol": symbol, "timeframe": "1h", "open_time": prediction(symbol, hour).open_time, "open": price,
            "high": price + 2, "low": price - 2, "close": price + 1, "volume": 10.0, "closed": True}


@pytest.fixture
def dashboard_without_redis(isolated: Settings, tmp_path: Path) -> Iterator[DashboardProcess]:
    """The dashboard with Redis down (its URL a port nothing listens on): Kafka is all it has."""
    asyncio.run(ensure_topics(isolated))
    env = {**service_env(isolated), "BSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with DashboardProcess(env, tmp_path / "dashboard.log", free_port()).start() as process:
        yield process


def test_the_pages_in_a_real_browser_with_redis_down(isolated: Settings,
                                                     dashboard_without_redis: DashboardProcess) -> None:
    from playwright.sync_api import sync_playwright

    dashboard = dashboard_without_redis

    names = TopicNames.of(isolated)
    calls = [prediction("BTCUSDT", hour) for hour in range(6)] + [prediction("ETHUSDT", 5, p_up=0.2, p_down=0.7)]
    produce(isolated, names.candles, [("BTCUSDT", candle("BTCUSDT", hour)) for hour in range(8)])
    produce(isolated, names.predictions, [(c.symbol, c.model_dump(mode="json")) for c in calls])
    shadow = prediction("BTCUSDT", 1, p_up=0.1, p_down=0.7, version="v2")
    produce(isolated, names.predictions_shadow, [("BTCUSDT", shadow.model_dump(mode="json"))])
    produce(isolated, names.outcomes, [("BTCUSDT", outcome(calls[0], "2%", "up").model_dump(mode="json")),
                                       ("BTCUSDT", outcome(calls[1], "2%", "down").model_dump(mode="json"))])
    produce(isolated, names.control_events, [("promote", {"status": "refused", "reason": "unknown version v9",
                                                          "at": "2026-01-01T00:00:00Z", "command": "promote"}),
                                             ("breaker", {"status": "breaker", "command": "breaker", "version": "v1",
                                                          "breaker": "open", "worker": "host-1",
                                                          "at": "2026-01-01T00:00:00Z", "reason": "v1 opened: NaN"})])
    produce(isolated, names.candles_dlq, [("BTCUSDT", {"reason": "not JSON", "kind": "json", "key": "BTCUSDT"})])

    assert status(dashboard.url + "/") == 401
    assert status(dashboard.url + "/symbol/BTCUSDT?token=wrong") == 401
    assert status(dashboard.url + "/static/symbol.js", {"Authorization": "Bearer wrong"}) == 401

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=debian_program("chromium", "chromium", print),
                                             args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(f"{dashboard.url}/?token={TOKEN}")  # sets the cookie, redirects to /
        assert page.url == dashboard.url + "/"
        page.wait_for_selector("#row-ETHUSDT .SHORT", timeout=30_000)
        page.wait_for_selector("#row-BTCUSDT", timeout=30_000)
        assert page.locator("#row-SOLUSDT").count() == 0

        fresh = prediction("SOLUSDT", 5, p_up=0.7, p_down=0.1)
        newer = prediction("BTCUSDT", 6, p_up=0.1, p_down=0.8)
        produce(isolated, names.predictions, [("SOLUSDT", fresh.model_dump(mode="json")),
                                              ("BTCUSDT", newer.model_dump(mode="json"))])
        page.wait_for_selector("#row-SOLUSDT .LONG", timeout=30_000)  # no reload: the row came over SSE
        page.wait_for_selector("#row-BTCUSDT .SHORT", timeout=30_000)  # the newer call replaced the row
        assert page.locator("#markets tbody tr").count() == 3

        page.goto(f"{dashboard.url}/symbol/BTCUSDT?target=2%25")
        page.wait_for_selector("#chart canvas", timeout=30_000)
        chart = page.evaluate("window.dashboardChart")
        assert len(chart["candles"]) == 8
        assert len(chart["markers"]) == 7  # hours 0 to 6
        assert [m["outcome"] for m in chart["markers"][:3]] == ["up", "down", None]
        assert page.locator("#calls tbody tr").count() == 7
        assert "shadow v2" in page.locator("#calls tbody tr:nth-child(6) td.shadow").inner_text()  # hour 1
        page.evaluate("window.kept = true")
        produce(isolated, names.candles, [("BTCUSDT", candle("BTCUSDT", 8))])
        produce(isolated, names.predictions, [("BTCUSDT", prediction("BTCUSDT", 7).model_dump(mode="json"))])
        produce(isolated, names.outcomes, [("BTCUSDT", outcome(calls[2], "2%", "none").model_dump(mode="json"))])
        page.wait_for_function("() => window.dashboardChart.candles.length === 9 && "
                               "window.dashboardChart.markers.length === 8 && "
                               "window.dashboardChart.markers[2].outcome === 'none'", timeout=30_000)  # over SSE
        assert page.locator("#calls tbody tr").count() == 8 and page.evaluate("window.kept") is True

        page.goto(f"{dashboard.url}/operations")
        assert "did not answer for the control state" in page.locator("#control-state-unavailable").inner_text()
        assert "unknown version v9" in page.locator("#control-events").inner_text()
        assert "json" in page.locator("#dead-letters").inner_text()
        assert page.locator('#breakers tr[data-version="v1"][data-status="open"]').count() == 1
        assert "host-1" in page.locator("#breakers").inner_text()
        assert page.locator("#lag tbody tr").count() == isolated.topics.partitions
        assert page.locator("#lag-total").inner_text() == "9"  # no worker has committed: every candle waits
        page.evaluate("window.kept = true")
        produce(isolated, names.control_events, [("rollback", {"status": "applied", "at": "2026-01-01T01:00:00Z",
                                                               "command": "rollback", "issued_by": "ops"})])
        page.wait_for_selector("#control-events tr.applied", timeout=30_000)  # over SSE, no reload
        assert page.evaluate("window.kept") is True

        page.goto(f"{dashboard.url}/track-record")
        record = page.locator("#track-record tbody tr").inner_text()
        assert "v1" in record and "2%" in record and "live" in record
        assert "did not answer for the live scores" in page.locator("#live-scores-unavailable").inner_text()
        browser.close()
    assert dashboard.returncode is None, dashboard.log_tail()
    assert TOKEN not in dashboard.log_path.read_text()


# --- a real worker's replay of real candles --------------------------------------------------------

REPLAY_HOURS = 300
REPLAY_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
CONTROL_SECRET = "dashboard-test-control-secret-32-characters"
CLASSES = ("up", "down", "none")
SHOWN_SCORES = """() => Object.fromEntries(Array.from(document.querySelectorAll('#track-record tbody tr')).map(
    r => [[r.dataset.version, r.dataset.target, r.dataset.stream].join(' '),
          Array.from(r.querySelectorAll('td[data-value]')).map(td => Number(td.dataset.value))]))"""
SHOWN_EQUITY = """() => Object.fromEntries(Array.from(document.querySelectorAll('#equity tbody tr[data-trades]')).map(
    r => [[r.dataset.version, r.dataset.target].join(' '), [Number(r.dataset.trades), Number(r.dataset.total)]]))"""
HOUR_MS = 3_600_000


@pytest.fixture
def replay_settings(isolated: Settings, trained_version: Settings) -> Settings:
    settings = isolated.model_copy(update={"models_dir": trained_version.models_dir})
    asyncio.run(ensure_topics(settings))
    return settings


def scores_of(outcomes: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per "version target stream", from the outcome messages (each (id, target, version, stream) once), with
    plain numpy: count, hit rate (the arg-max class happened, first on ties), base rate, log loss (p floored
    at 1e-12), its climatology, Brier, its climatology (the constant forecast of the outcome shares)."""
    series: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for o in outcomes:
        series[f"{o['model']['version']} {o['target']} {o.get('stream', 'live')}"].setdefault(o["id"], o)
    scores = {}
    for key, by_id in series.items():
        p = np.array([[o["p_up"], o["p_down"], o["p_none"]] for o in by_id.values()])
        y = np.array([CLASSES.index(o["outcome"]) for o in by_id.values()])
        n = len(y)
        shares = np.bincount(y, minlength=3) / n
        scores[key] = [n, float(np.mean(p.argmax(axis=1) == y)), float(shares.max()),
                       float(np.mean(-np.log(np.maximum(p[np.arange(n), y], 1e-12)))),
                       float(-sum(s * np.log(s) for s in shares if s > 0)),
                       float(np.mean(((p - np.eye(3)[y]) ** 2).sum(axis=1))), float(1 - (shares ** 2).sum())]
    return scores


def equity_of(predictions: dict[str, Prediction], slices: dict[str, CandleSeries], outcomes: list[dict[str, Any]],
              settings: Settings) -> dict[str, list[float]]:
    """Per "version target": the number of trades and their total net % by the backtest's ``simulate_brackets``
    on the replayed candles, over the live calls that have a signal and an outcome, every one traded (no limit
    on open positions), of the ``lookback_hours`` candle hours up to the newest such call (what the dashboard
    keeps)."""
    answered = {(o["id"], o["target"]) for o in outcomes if o.get("stream", "live") == "live"}
    newest = max(p.open_time for p in predictions.values() for t in ("1%", "2%", "5%")
                 if (p.id, t) in answered and side_of(p.targets[t].signal) != 0)
    oldest = newest - (settings.dashboard.lookback_hours - 1) * HOUR_MS
    result: dict[str, list[float]] = {}
    for symbol, one in slices.items():
        kept = [p for p in predictions.values() if p.symbol == symbol and p.open_time >= oldest]
        grid = fill_gaps(one.open_time_ms, one.ohlcv, one.step_ms)
        for version in {p.model.version for p in kept}:
            for target in ("1%", "2%", "5%"):
                mine = sorted((p for p in kept if p.model.version == version and (p.id, target) in answered),
                              key=lambda p: p.open_time)
                trades = simulate_brackets(
                    symbol, target, target_pct(target), grid.open_time_ms, grid.ohlcv,
                    np.searchsorted(grid.open_time_ms, [p.open_time for p in mine]),
                    np.array([side_of(p.targets[target].signal) for p in mine]), settings.market.horizon_candles,
                    settings.signals.round_trip_cost_pct, one.step_ms, max_open=len(mine) + 1)
                if trades:
                    total = result.setdefault(f"{version} {target}", [0, 0.0])
                    total[0] += len(trades)
                    total[1] += sum(t.net_pct for t in trades)
    return result


def control_message(command: str, args: dict[str, Any], secret: str) -> tuple[str, bytes]:
    return command, encode_message(build_message(command, args, secret, datetime.now(UTC), "dashboard-test"))


def test_a_real_worker_replay_in_a_real_browser(replay_settings: Settings, futures_series: dict[str, CandleSeries],
                                                tmp_path: Path) -> None:
    """The real stack: a worker serving the tests' small RandomForest, 300 h of three real futures series
    replayed with an in-progress update before each closed candle. Markets fill live; the chart holds
    exactly the closed candles and one marker per call with the outcomes of the topic; a call's explanation
    is the explainer's on the candle files; the track record (loaded before any outcome, updated live)
    equals the scores computed here from the outcomes topic, over all and over the newest 24 candle hours,
    and its equity of the live signals equals the backtest's trades of the same calls on the same candles;
    operations shows the control commands."""
    from playwright.sync_api import sync_playwright

    settings = replay_settings
    names = TopicNames.of(settings)
    slices = {s: futures_series[s].tail(REPLAY_HOURS) for s in REPLAY_SYMBOLS}
    records = list(candle_records(list(slices.values()), updates=1))
    min_history = load_manifest(settings.models_dir / "v-test").min_history
    expected_ids = {f"{s}|1h|{int(t)}" for s, one in slices.items() for t in one.open_time_ms[min_history - 1:]}
    # drift counted into Redis every 100 rows (not 500): this replay's few hundred rows reach the operations page
    env = {**service_env(settings), "BSE_CONTROL_SECRET": CONTROL_SECRET, "BSE_DRIFT__CHECK_EVERY_ROWS": "100",
           "BSE_DRIFT__MIN_ROWS": "100"}
    shots = os.environ.get("BSE_DASHBOARD_SCREENSHOTS")
    with (DashboardProcess(env, tmp_path / "dashboard.log", free_port()) as dashboard,
          WorkerProcess(env, tmp_path / "worker.log") as worker, sync_playwright() as playwright):
        browser = playwright.chromium.launch(executable_path=debian_program("chromium", "chromium", print),
                                             args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        markets = context.new_page()
        markets.goto(f"{dashboard.url}/?token={TOKEN}")
        assert markets.locator("#empty").count() == 1
        tracker, operations = context.new_page(), context.new_page()
        tracker.goto(f"{dashboard.url}/track-record")
        operations.goto(f"{dashboard.url}/operations")
        assert tracker.locator("#track-record tbody tr").count() == 0
        for page in (markets, tracker, operations):
            page.evaluate("window.kept = true")  # gone if the page reloads

        replaying = threading.Thread(target=asyncio.run, args=(replay(settings, records, rate_per_s=150),))
        replaying.start()
        markets.wait_for_selector("#row-BTCUSDT", timeout=60_000)
        produce(settings, names.control, [control_message("promote", {"version": "v-test"}, CONTROL_SECRET),
                                          control_message("rollback", {}, "a-forged-secret-of-32-characters!!")])
        replaying.join()
        predictions = {p.id: p for p in (Prediction.model_validate_json(r.value) for r in in_thread(read_until(
            settings, names.predictions, len(expected_ids), 120, identity=lambda r: orjson.loads(r.value)["id"])))}
        assert set(predictions) == expected_ids, worker.log_tail()
        newest = max(p.open_time for p in predictions.values())
        markets.wait_for_function("([symbols, time]) => symbols.every(s => document.querySelector("
                                  "'#row-' + s + ' .time')?.textContent === time)",
                                  arg=[list(REPLAY_SYMBOLS), utc_text(newest)], timeout=30_000)
        deadline = time.monotonic() + 90
        while True:  # the worker may still be settling: until the page and the topic hold the same outcomes
            outcomes = [orjson.loads(r.value) for r in in_thread(read_topic(settings, names.outcomes, idle_ms=1500))]
            expected = scores_of(outcomes)
            shown = tracker.evaluate(SHOWN_SCORES)
            if {k: v[0] for k, v in shown.items()} == {k: v[0] for k, v in expected.items()}:
                break
            assert time.monotonic() < deadline, (shown, expected)
        assert {o["outcome"] for o in outcomes} == set(CLASSES)
        assert shown.keys() == expected.keys() == {f"v-test {t} live" for t in ("1%", "2%", "5%")}
        for key, values in expected.items():
            assert shown[key] == pytest.approx(values, rel=1e-9, abs=1e-12), key

        operations.wait_for_selector("#control-events tr.applied", timeout=30_000)
        operations.wait_for_selector("#control-events tr.refused", timeout=30_000)
        operations.wait_for_selector("#control-state >> text=v-test", timeout=30_000)
        operations.wait_for_selector('#breakers tr[data-version="v-test"][data-status="closed"]', timeout=30_000)
        operations.wait_for_selector('table.drift[data-version="v-test"] tbody tr', timeout=30_000)
        assert all(page.evaluate("window.kept") is True for page in (markets, tracker, operations))
        deadline = time.monotonic() + 60
        while operations.locator("#lag-total").inner_text() != "0":  # read on each render: a reload reads it again
            assert time.monotonic() < deadline, operations.locator("#lag").inner_text()
            time.sleep(1)
            operations.reload()
        assert operations.locator("#lag tbody tr").count() == settings.topics.partitions  # every candle committed
        if shots:
            markets.screenshot(path=f"{shots}/markets.png")
            tracker.screenshot(path=f"{shots}/track-record.png", full_page=True)
            operations.screenshot(path=f"{shots}/operations.png", full_page=True)

        # The equity of the kept live signals: the backtest's trades over the same calls and candles.
        expected_equity = equity_of(predictions, slices, outcomes, settings)
        deadline = time.monotonic() + 30
        while (shown_equity := tracker.evaluate(SHOWN_EQUITY)).keys() != expected_equity.keys() or any(
                shown_equity[k][0] != v[0] for k, v in expected_equity.items()):  # a horizon close may still come
            assert time.monotonic() < deadline, (shown_equity, expected_equity)
            time.sleep(0.5)
        for key, (trades, total) in expected_equity.items():
            assert shown_equity[key] == pytest.approx([trades, total], rel=1e-9, abs=1e-9), key
        # A period: the outcomes of the newest 24 candle hours, scored as numpy scores them alone.
        newest_hour = max(o["open_time"] for o in outcomes) // HOUR_MS
        tracker.goto(f"{dashboard.url}/track-record?period=24h")
        day = tracker.evaluate(SHOWN_SCORES)
        recent = scores_of([o for o in outcomes if o["open_time"] // HOUR_MS > newest_hour - 24])
        assert day.keys() == recent.keys() and day != shown
        for key, values in recent.items():
            assert day[key] == pytest.approx(values, rel=1e-9, abs=1e-12), key
        assert tracker.locator("#reliability figure").count() == 3

        btc = slices["BTCUSDT"]
        markets.click("#row-BTCUSDT a")
        markets.wait_for_selector("#chart canvas", timeout=30_000)
        chart = markets.evaluate("window.dashboardChart")
        kept = len(chart["candles"])
        assert kept == min(REPLAY_HOURS, 240)  # history_hours + chart_extra_hours, the closed candles only
        assert [[c["time"] * 1000, c["open"], c["high"], c["low"], c["close"]] for c in chart["candles"]] == \
            np.column_stack([btc.open_time_ms[-kept:], btc.ohlcv[-kept:, :4]]).tolist()
        btc_calls = sorted(p.open_time for p in predictions.values() if p.symbol == "BTCUSDT")
        assert [m["time"] * 1000 for m in chart["markers"]] == btc_calls
        resolved = {o["open_time"] // 1000: o["outcome"] for o in outcomes
                    if o["symbol"] == "BTCUSDT" and o["target"] == "2%"}
        assert resolved and {m["time"]: m["outcome"] for m in chart["markers"] if m["outcome"]} == resolved
        if shots:
            markets.screenshot(path=f"{shots}/symbol.png")

        markets.click("#calls tbody tr:first-child a")  # the newest call
        markets.wait_for_selector("#explanation", timeout=30_000)
        assert markets.url.endswith(f"/symbol/BTCUSDT/call/{btc_calls[-1]}?target=2%25")
        explanation = Explainer(settings.models_dir).explain(predictions[f"BTCUSDT|1h|{btc_calls[-1]}"], "2%",
                                                              futures_series["BTCUSDT"].open_time_ms,
                                                              futures_series["BTCUSDT"].ohlcv)
        rows = markets.locator("#explanation tbody tr")
        assert rows.evaluate_all("rows => rows.map(r => r.dataset.name)") == [c.name for c in explanation.contributions]
        assert rows.evaluate_all("rows => rows.map(r => r.querySelector('.push').textContent)") == \
            [f"{c.push:+.4f}" for c in explanation.contributions]
        if shots:
            markets.screenshot(path=f"{shots}/call.png")
        browser.close()

        for path in ("/", "/track-record", "/updates/track-record", f"/symbol/BTCUSDT/call/{btc_calls[-1]}"):
            assert status(dashboard.url + path) == 401, path
        assert dashboard.returncode is None, dashboard.log_tail()
