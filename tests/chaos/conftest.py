"""The chaos suite's fixtures: its own Kafka and Redis, the candles, the clean run, the results table.

Run it with ``make chaos`` (``pytest tests/chaos -m chaos``); ``make test`` leaves it out.
"""

from __future__ import annotations

from pydantic import SecretStr
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from configs.settings import Settings, load_settings
from bse_predict.candles.files import CandleSeries
from bse_predict.features.definitions import LOOKBACK_CANDLES
from tests.chaos.harness import REPO_ROOT, CaseRun, ChaosStack, RunResult
from bse_predict.stream.replay import CandleRecord, candle_records

HOURS = 330
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
EXPECTED_PREDICTIONS = len(SYMBOLS) * (HOURS - (LOOKBACK_CANDLES - 1))
LOAD = f"{len(SYMBOLS)} symbols x {HOURS} h, 1 update per candle"
RESULTS_DIR = REPO_ROOT / "var" / "chaos"

# Faults resolve fast in the suite: a worker gives up a batch after 20 s or a stalled consumer after 30 s
# (then its supervisor restarts it), and a frozen worker's partitions move after 6 s.
CHAOS_CONFIG = {"worker": {"session_timeout_s": 6.0,
                           "faults": {"deadline_s": 20.0, "retry_max_s": 2.0, "attempt_timeout_s": 40.0,
                                      "stall_s": 30.0}}}


@pytest.fixture(scope="session")
def chaos_dir() -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR


@pytest.fixture(scope="session")
def stack(chaos_dir: Path) -> Iterator[ChaosStack]:
    """A single-node Kafka on 19092 and Redis on 16379 (AOF on), the suite's own."""
    stack = ChaosStack(home=chaos_dir / "services", kafka_port=19092, redis_port=16379)
    stack.up()
    yield stack
    stack.down()


@pytest.fixture(scope="session")
def cluster(chaos_dir: Path, stack: ChaosStack) -> Iterator[ChaosStack]:
    """Three KRaft brokers on 19192, 19194, 19196 (replication 3, min.insync.replicas 2) and a Redis on 16380.

    Below Linux's ephemeral port range (32768-60999): an outgoing connection of an earlier
    test may hold a port in that range, and a broker that cannot bind it exits at start-up."""
    cluster = ChaosStack(home=chaos_dir / "cluster-services", kafka_port=19192, redis_port=16380, brokers=3)
    cluster.up()
    yield cluster
    cluster.down()


@pytest.fixture(scope="session")
def records(futures_series: dict[str, CandleSeries]) -> list[CandleRecord]:
    """330 h of BTC, ETH and SOL, each closed candle after one in-progress update."""
    return list(candle_records([futures_series[s].tail(HOURS) for s in SYMBOLS], updates=1))


@pytest.fixture(scope="session")
def chaos_settings(trained_version: Settings) -> Settings:
    return load_settings(models_dir=str(trained_version.models_dir))


def new_case(stack: ChaosStack, settings: Settings, records: list[CandleRecord], log_dir: Path,
             expected_outcomes: int | None, **options: object) -> CaseRun:
    base = settings.model_copy(update={"kafka_bootstrap": stack.bootstrap,
                                       "redis_url": SecretStr(stack.env["BSE_REDIS_URL"])})
    config = options.pop("config", CHAOS_CONFIG)
    return CaseRun(stack=stack, base=base, records=records, expected_predictions=EXPECTED_PREDICTIONS,
                   expected_outcomes=expected_outcomes, log_dir=log_dir, config=config, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def clean_run(stack: ChaosStack, chaos_settings: Settings, records: list[CandleRecord], chaos_dir: Path,
              results_table: list[dict]) -> RunResult:
    """The same candles through one worker with no fault: the yardstick of every case."""
    result = new_case(stack, chaos_settings, records, chaos_dir, expected_outcomes=None, rate_per_s=200).run()
    assert len(result.predictions) == EXPECTED_PREDICTIONS
    assert result.outcomes, "the clean run settled no outcome"
    assert result.exit_codes == []
    results_table.append({"fault": "none (the clean run every case is compared with)", "load": LOAD,
                          "lost_predictions": 0, "lost_outcomes": 0, "changed": 0, "windows_equal": True,
                          "duplicates": result.raw_predictions - len(result.predictions), "exits": 0,
                          "recovery_s": max(0.0, result.caught_up_s - result.replay_s)})
    return result


@pytest.fixture(scope="session")
def results_table(chaos_dir: Path) -> Iterator[list[dict]]:
    """Rows of docs/reliability.md, written to var/chaos/results.md and .json when the session ends."""
    rows: list[dict] = []
    yield rows
    if not rows:
        return
    (chaos_dir / "results.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    lines = [f"Chaos suite, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `make chaos`", "",
             "| fault | load | predictions lost | outcomes lost | changed | windows equal | duplicates before dedupe "
             "| worker exits | caught up after the replay (s) |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['fault']} | {row['load']} | {row['lost_predictions']} | {row['lost_outcomes']} | "
                     f"{row['changed']} | {'yes' if row['windows_equal'] else 'NO'} | {row['duplicates']} | "
                     f"{row['exits']} | {row['recovery_s']:.1f} |")
    (chaos_dir / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
