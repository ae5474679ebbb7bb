"""``bse-predict demo``: the whole first run on one machine.

Starts the local services, trains a small version when none exists, runs a
worker on fresh topics, replays the newest candles of BTC, ETH and SOL with
in-progress updates, and prints each prediction as it arrives.

``bse-predict demo --live`` (``make demo-live``, from the repository): the same
model and worker, but the candles come from an exchange: the exchange simulator
(``python -m tests.support.exchange_sim``) serves the same newest candles in
Binance's formats on a fast clock, and ``bse-predict ingest`` backfills the
history by REST and streams the live closes into ``candles``. Each prediction is
printed with its delay from the candle's close at the exchange. Everything
started is stopped after ``--predictions`` predictions, on Ctrl-C or on SIGTERM.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from rich.console import Console

from bse_predict.services.stack import services_up
from configs.settings import Settings
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.features.inputs import INPUT_LOOKBACK
from bse_predict.serving.manifest import list_versions, load_manifest
from bse_predict.candles.schema import Prediction
from bse_predict.candles.synthetic import synthetic_series
from bse_predict.connections.clients import client_environment, kafka_options
from bse_predict.stream.replay import candle_records, replay
from bse_predict.connections.topics import TopicNames, ensure_topics

__all__ = ["run_demo", "DEMO_DATA"]

DEMO_DATA = Path("../shared/data/candles/binance-futures")
DEMO_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TRAIN_ROWS = 6000
REPLAY_HOURS = max(INPUT_LOOKBACK.values()) + 48


def _demo_series(console: Console) -> tuple[list[CandleSeries], list[CandleSeries]]:
    """(training series, replay series): real futures candles, or generated ones, said loudly."""
    if DEMO_DATA.is_dir():
        series = [s for s in read_candle_files([DEMO_DATA]) if s.symbol in DEMO_SYMBOLS]
        training = [CandleSeries(s.symbol, s.timeframe, s.open_time_ms[:-REPLAY_HOURS], s.ohlcv[:-REPLAY_HOURS], s.source)
                    for s in series]
        return training, [s.tail(REPLAY_HOURS) for s in series]
    console.print(f"[bold red]NO REAL DATA at {DEMO_DATA}: training and replaying GENERATED candles "
                  "(a random walk; predictions carry no signal)[/bold red]")
    now_ms = int(time.time() * 1000)
    generated = [synthetic_series(symbol, TRAIN_ROWS + REPLAY_HOURS, seed, now_ms - 3_600_000)
                 for seed, symbol in enumerate(DEMO_SYMBOLS)]
    return [s.tail(TRAIN_ROWS + REPLAY_HOURS) for s in generated], [s.tail(REPLAY_HOURS) for s in generated]


def _ensure_version(settings: Settings, training: list[CandleSeries], console: Console) -> str:
    versions = list_versions(settings.models_dir)
    if versions:
        console.print(f"serving the newest version in {settings.models_dir}: {versions[-1].version}")
        return versions[-1].version
    from bse_predict.training.train import train_version

    version = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    served = settings.models.served  # the demo shows the stream: the served family is enough
    families = {name: family.model_copy(update={"enabled": name == served})  # an ensemble's members keep their blocks
                for name, family in settings.models.families.items()}
    # The demo shows the stream, not a forecast: a version from 6,000 hours can land just worse than
    # climatology at one target, which the servable gate would rightly refuse to serve.
    gate_off = settings.training.servable_gate.model_copy(update={"enabled": False})
    tuned = settings.model_copy(update={
        "training": settings.training.model_copy(update={"max_rows_per_symbol": TRAIN_ROWS, "servable_gate": gate_off}),
        "models": settings.models.model_copy(update={"families": families}),
    })
    console.print(f"no model version yet: training {version} ({served}) on the newest {TRAIN_ROWS} hours of "
                  f"{', '.join(DEMO_SYMBOLS)}; a demonstration of the stream, so the servable gate is off for it "
                  "(`bse-predict train` keeps it on)")
    train_version(training, tuned, version)
    return version


def _print(console: Console, prediction: Prediction, note: str = "") -> None:
    when = datetime.fromtimestamp(prediction.open_time / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    calls = "  ".join(f"{t} up {p.p_up:.2f} down {p.p_down:.2f} {p.signal:<11}" for t, p in prediction.targets.items())
    console.print(f"{when}  {prediction.symbol:<8} {prediction.close:>10.2f}  {calls}{note}", highlight=False)


async def _show_predictions(settings: Settings, expected: int, console: Console, timeout_s: float,
                            note: Callable[[Prediction], str] = lambda _: "", seen: set[str] | None = None) -> int:
    """Prints each new prediction until ``expected`` were shown (ids kept in ``seen``) or ``timeout_s``."""
    consumer = AIOKafkaConsumer(TopicNames.of(settings).predictions, **kafka_options(settings),
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen = set() if seen is None else seen
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    prediction = Prediction.model_validate_json(record.value)
                    if prediction.id not in seen and len(seen) < expected:
                        seen.add(prediction.id)
                        _print(console, prediction, note(prediction))
    finally:
        await consumer.stop()
    return len(seen)


def _demo_run(settings: Settings, version: str) -> tuple[Settings, dict[str, str]]:
    """Fresh topics for this run, and the environment that points a command at them and at the models."""
    demo_settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}demo-{int(time.time())}."})
    asyncio.run(ensure_topics(demo_settings))
    env = {**os.environ, "BSE_TOPIC_PREFIX": demo_settings.topic_prefix, "BSE_MODELS_DIR": str(settings.models_dir),
           **client_environment(settings)}
    return demo_settings, env


def _start(args: list[str], env: dict[str, str], log_path: Path, pipe: bool = False) -> subprocess.Popen[bytes]:
    """A subprocess in its own session (Ctrl-C reaches only us; we stop it), its output in ``log_path``;
    ``pipe``: its stdout is read by us, only stderr goes to the log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE if pipe else log,
                            stderr=log if pipe else subprocess.STDOUT, start_new_session=True)


def _start_worker(env: dict[str, str], version: str, log_path: Path) -> subprocess.Popen[bytes]:
    return _start([sys.executable, "-m", "bse_predict.cli", "worker", "--version", version], env, log_path)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each (newest first), then SIGKILL to any still running after 30 s."""
    for process in reversed(processes):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in reversed(processes):
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def run_demo(settings: Settings, rate_per_s: float, progress: Callable[[str], None]) -> int:
    """Returns the number of predictions shown."""
    console = Console(soft_wrap=True)
    services_up(settings, progress=progress)
    training, replayed = _demo_series(console)
    version = _ensure_version(settings, training, console)
    demo_settings, env = _demo_run(settings, version)
    log_path = Path("var") / "demo-worker.log"
    worker = _start_worker(env, version, log_path)
    console.print(f"worker started (log: {log_path}); replaying {REPLAY_HOURS} hours of {', '.join(s.symbol for s in replayed)} "
                  f"with 2 in-progress updates per candle at {rate_per_s:g} candles/s")
    history = load_manifest(settings.models_dir / version).min_history  # the served models' window
    expected = sum(len(s.open_time_ms) - history + 1 for s in replayed)
    try:
        async def both() -> int:
            shown = asyncio.create_task(_show_predictions(demo_settings, expected, console, timeout_s=300))
            await replay(demo_settings, list(candle_records(replayed, updates=2)), rate_per_s)
            return await shown

        shown = asyncio.run(both())
    finally:
        _stop([worker])
    console.print(f"{shown} predictions of {expected} expected (the first {history - 1} hours of each "
                  "symbol only fill its window)")
    return shown


SIMULATOR = "tests.support.exchange_sim"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _await_worker(worker: subprocess.Popen[bytes], metrics_port: int, log_path: Path, timeout_s: float) -> None:
    """Until the worker serves (``bse_control_revision`` on its /metrics): the live closes are then timed from a
    worker that waits for them, not one still loading its models."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}: see {log_path}")
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read().decode()
        except (urllib.error.URLError, OSError):
            text = ""
        if any(line.startswith("bse_control_revision ") and not line.endswith(" -1.0") for line in text.splitlines()):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the worker did not serve within {timeout_s:g} s: see {log_path}")


def _read_line(process: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    return process.stdout.readline() if ready else b""


def _raise_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run_live_demo(settings: Settings, hour_s: float, predictions: int, progress: Callable[[str], None]) -> int:
    """The live path: exchange simulator → ``bse-predict ingest`` → candles → worker → predictions, until
    ``predictions`` predictions were shown, Ctrl-C or SIGTERM; returns the number shown."""
    console = Console(soft_wrap=True)
    if importlib.util.find_spec(SIMULATOR.rpartition(".")[0]) is None or not DEMO_DATA.is_dir():
        raise FileNotFoundError(f"the live demo runs from the repository's root with the real candles in {DEMO_DATA} "
                                f"(the exchange simulator is {SIMULATOR.replace('.', '/')}.py)")
    _raise_on_sigterm()
    services_up(settings, progress=progress)
    training, live = _demo_series(console)
    version = _ensure_version(settings, training, console)
    history = load_manifest(settings.models_dir / version).min_history
    demo_settings, env = _demo_run(settings, version)
    symbols = ",".join(s.symbol for s in live)
    logs = Path("var")
    processes: list[subprocess.Popen[bytes]] = []
    seen: set[str] = set()
    try:
        metrics_port = _free_port()
        worker_log = logs / "demo-live-worker.log"
        processes.append(_start_worker({**env, "BSE_LIVE_METRICS__METRICS_PORT": str(metrics_port),
                                        "BSE_LIVE_METRICS__REFRESH_S": "0.5"}, version, worker_log))
        _await_worker(processes[-1], metrics_port, worker_log, 180)
        # the exchange: the newest REPLAY_HOURS candles, the first history-1 closed already (a window less one)
        exchange = _start([sys.executable, "-m", SIMULATOR, "--data", str(DEMO_DATA), "--symbols", symbols,
                           "--last-hours", str(REPLAY_HOURS), "--history-hours", str(history - 1),
                           "--hour-seconds", f"{hour_s:g}", "--tick-seconds", f"{min(0.05, hour_s / 8):g}"],
                          env, logs / "demo-live-exchange.log", pipe=True)
        processes.append(exchange)
        line = _read_line(exchange, 30)
        if not line:
            raise RuntimeError(f"the exchange simulator did not start: see {logs / 'demo-live-exchange.log'}")
        sim = json.loads(line)
        ingest_env = {**env, "BSE_INGEST__FUTURES__REST_URL": sim["rest_url"],
                      "BSE_INGEST__FUTURES__WS_URL": sim["ws_url"],
                      "BSE_INGEST__UPDATE_INTERVAL_S": f"{hour_s / 4:g}",
                      "BSE_INGEST__ROTATE_AFTER_S": f"{20 * hour_s:g}"}  # the simulator cuts connections at 24 h
        processes.append(_start([sys.executable, "-m", "bse_predict.cli", "ingest", "--market", "futures",
                                 "--symbols", symbols], ingest_env, logs / "demo-live-ingest.log"))
        console.print(f"exchange simulator at {sim['rest_url']} (Binance's REST and WebSocket formats): one hour "
                      f"every {hour_s:g} s; bse-predict ingest backfills {history - 1} hours by REST, then streams the "
                      f"live closes of {symbols} into candles; a worker predicts (logs: {logs}/demo-live-*.log)")

        def note(prediction: Prediction) -> str:
            close_s = sim["started_wall_s"] + (prediction.open_time + 3_600_000 - sim["start_ms"]) / 3_600_000 * sim["hour_s"]
            delay_s = time.time() - close_s
            return f"  {delay_s * 1000:6.0f} ms after the exchange's close" if delay_s > 0 else "  (backfilled)"

        asyncio.run(_show_predictions(demo_settings, predictions, console, timeout_s=60 + predictions * hour_s * 2,
                                      note=note, seen=seen))
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        _stop(processes)
    console.print(f"{len(seen)} predictions shown; the exchange simulator, ingest and the worker are stopped")
    return len(seen)
