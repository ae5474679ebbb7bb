"""``bse-predict demo --live`` (``make demo-live``) as a newcomer runs it, non-interactively: the exchange
simulator, ``bse-predict ingest`` and a worker; it prints predictions made from candles that came from the
"exchange", stops everything it started after ``--predictions``, and exits 0. SIGTERM (what Ctrl-C does to
it, through ``KeyboardInterrupt``) stops everything too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from configs.settings import Settings
from tests.support.worker_process import service_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _demo(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bse_predict.cli", "demo", "--live", *args], cwd=ROOT,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _exchange_is_gone(output: str) -> None:
    url = re.search(r"exchange simulator at (http://\S+)", output)
    assert url, output
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(f"{url.group(1)}/fapi/v1/time", timeout=2)


def test_the_live_demo_prints_predictions_from_the_exchange_and_stops_everything(
        isolated: Settings, trained_version: Settings) -> None:
    env = {**service_env(isolated), "BSE_MODELS_DIR": str(trained_version.models_dir)}
    demo = _demo(env, "--predictions", "6", "--hour-seconds", "0.5")
    output, _ = demo.communicate(timeout=180)
    assert demo.returncode == 0, output
    live = [line for line in output.splitlines() if "ms after the exchange's close" in line]
    assert len(live) >= 6 and "6 predictions shown" in output, output
    _exchange_is_gone(output)
    for name in ("exchange", "ingest", "worker"):
        assert (ROOT / "var" / f"demo-live-{name}.log").exists()
    assert "streams subscribed" in (ROOT / "var" / "demo-live-ingest.log").read_text()

    demo = _demo(env, "--predictions", "1000", "--hour-seconds", "0.5")
    deadline = time.monotonic() + 120
    seen = []
    assert demo.stdout is not None
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        seen.append(line)
        if "after the exchange's close" in line:
            break
    os.killpg(demo.pid, signal.SIGTERM)
    rest, _ = demo.communicate(timeout=60)
    output = "".join(seen) + rest
    assert "stopping" in output and "are stopped" in output, output
    _exchange_is_gone(output)
