"""``bse-predict dashboard`` as a subprocess against the real Kafka and Redis, driven in real headless
Chromium (Debian's, installed with apt-get when missing; Playwright drives it): the markets page shows a
call produced after it loaded without a reload, the symbol page draws its chart with one marker per call
and the outcome joined, operations and track record show what the topics carried, and a request
without the token is refused.

Set ``BSE_DASHBOARD_SCREENSHOTS=DIR`` to keep a PNG of each page (docs/dashboard/ holds the ones shown
in docs/dashboard.md)."""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from configs.settings import Settings
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.services.debian_packages import debian_program
from tests.support.kafka_io import send_raw
from tests.support.worker_process import CommandProcess, free_port, service_env
from tests.unit.test_dashboard_board import outcome, prediction

pytestmark = pytest.mark.integration

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


def produce(settings: Settings, topic: str, messages: list[tuple[str, dict | bytes]]) -> None:
    """Sent from a thread of its own: Playwright's sync API runs an event loop in the test's thread."""
    records = [(key.encode(), m if isinstance(m, bytes) else orjson.dumps(m)) for key, m in messages]
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, send_raw(settings, topic, records)).result()


def candle(symbol: str, hour: int) -> dict:
    price = 100.0 + hour
    return {"symbol": symbol, "timeframe": "1h", "open_time": prediction(symbol, hour).open_time, "open": price,
            "high": price + 2, "low": price - 2, "close": price + 1, "volume": 10.0, "closed": True}


@pytest.fixture
def dashboard(isolated: Settings, tmp_path: Path) -> Iterator[DashboardProcess]:
    asyncio.run(ensure_topics(isolated))
    with DashboardProcess(service_env(isolated), tmp_path / "dashboard.log", free_port()).start() as process:
        yield process


def test_the_pages_in_a_real_browser(isolated: Settings, dashboard: DashboardProcess) -> None:
    from playwright.sync_api import sync_playwright

    names = TopicNames.of(isolated)
    calls = [prediction("BTCUSDT", hour) for hour in range(6)] + [prediction("ETHUSDT", 5, p_up=0.2, p_down=0.7)]
    produce(isolated, names.candles, [("BTCUSDT", candle("BTCUSDT", hour)) for hour in range(8)])
    produce(isolated, names.predictions, [(c.symbol, c.model_dump(mode="json")) for c in calls])
    produce(isolated, names.outcomes, [("BTCUSDT", outcome(calls[0], "2%", "up").model_dump(mode="json")),
                                       ("BTCUSDT", outcome(calls[1], "2%", "down").model_dump(mode="json"))])
    produce(isolated, names.control_events, [("promote", {"status": "refused", "reason": "unknown version v9",
                                                          "at": "2026-01-01T00:00:00Z", "command": "promote"})])
    produce(isolated, names.candles_dlq, [("BTCUSDT", {"reason": "not JSON", "kind": "json", "key": "BTCUSDT"})])

    assert status(dashboard.url + "/") == 401
    assert status(dashboard.url + "/symbol/BTCUSDT?token=wrong") == 401
    assert status(dashboard.url + "/static/symbol.js", {"Authorization": "Bearer wrong"}) == 401

    shots = os.environ.get("BSE_DASHBOARD_SCREENSHOTS")
    chromium = debian_program("chromium", "chromium", print)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
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
        if shots:
            page.screenshot(path=f"{shots}/markets.png")

        page.goto(f"{dashboard.url}/symbol/BTCUSDT?target=2%25")
        page.wait_for_selector("#chart canvas", timeout=30_000)
        chart = page.evaluate("window.dashboardChart")
        assert chart["candles"] == 8
        assert len(chart["markers"]) == 7  # hours 0 to 6
        assert [m["outcome"] for m in chart["markers"][:3]] == ["up", "down", None]
        assert page.locator("#calls tbody tr").count() == 7
        if shots:
            page.screenshot(path=f"{shots}/symbol.png")

        page.goto(f"{dashboard.url}/operations")
        assert "unknown version v9" in page.locator("#control-events").inner_text()
        assert "json" in page.locator("#dead-letters").inner_text()
        if shots:
            page.screenshot(path=f"{shots}/operations.png")

        page.goto(f"{dashboard.url}/track-record")
        record = page.locator("#track-record tbody tr").inner_text()
        assert "v1" in record and "2%" in record and "live" in record
        if shots:
            page.screenshot(path=f"{shots}/track-record.png")
        browser.close()
    assert dashboard.returncode is None, dashboard.log_tail()
    assert TOKEN not in dashboard.log_path.read_text()
