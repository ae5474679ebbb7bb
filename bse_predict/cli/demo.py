"""``bse-predict demo``: the whole first run on one machine.

Starts the local services, trains a small version when none exists, runs a
worker on fresh topics, replays the newest candles of BTC, ETH and SOL with
in-progress updates, and prints each prediction as it arrives.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
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
    tuned = settings.model_copy(update={
        "training": settings.training.model_copy(update={"max_rows_per_symbol": TRAIN_ROWS}),
        "models": settings.models.model_copy(update={"families": families}),
    })
    console.print(f"no model version yet: training {version} ({served}) on the newest {TRAIN_ROWS} hours of "
                  f"{', '.join(DEMO_SYMBOLS)}")
    train_version(training, tuned, version)
    return version


def _print(console: Console, prediction: Prediction) -> None:
    when = datetime.fromtimestamp(prediction.open_time / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    calls = "  ".join(f"{t} up {p.p_up:.2f} down {p.p_down:.2f} {p.signal:<11}" for t, p in prediction.targets.items())
    console.print(f"{when}  {prediction.symbol:<8} {prediction.close:>10.2f}  {calls}", highlight=False)


async def _show_predictions(settings: Settings, expected: int, console: Console, timeout_s: float) -> int:
    consumer = AIOKafkaConsumer(TopicNames.of(settings).predictions, **kafka_options(settings),
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    prediction = Prediction.model_validate_json(record.value)
                    if prediction.id not in seen:
                        seen.add(prediction.id)
                        _print(console, prediction)
    finally:
        await consumer.stop()
    return len(seen)


def run_demo(settings: Settings, rate_per_s: float, progress: Callable[[str], None]) -> int:
    """Returns the number of predictions shown."""
    console = Console(soft_wrap=True)
    services_up(settings, progress=progress)
    training, replayed = _demo_series(console)
    version = _ensure_version(settings, training, console)
    demo_settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}demo-{int(time.time())}."})
    asyncio.run(ensure_topics(demo_settings))
    log_path = Path("var") / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BSE_TOPIC_PREFIX": demo_settings.topic_prefix, "BSE_MODELS_DIR": str(settings.models_dir),
           **client_environment(settings)}
    worker = subprocess.Popen([sys.executable, "-m", "bse_predict.cli", "worker", "--version", version],
                              env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
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
        worker.terminate()
        worker.wait(30)
    console.print(f"{shown} predictions of {expected} expected (the first {history - 1} hours of each "
                  "symbol only fill its window)")
    return shown
