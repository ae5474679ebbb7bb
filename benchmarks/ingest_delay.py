"""End-to-end delay of the live path: from a candle's close at the (simulated) exchange to its prediction on
``predictions``, with the exchange simulator, ``bse-predict ingest`` and a ``bse-predict worker`` on the real
Kafka and Redis.

The simulator (``tests/support/exchange_sim.py``, in this process) serves the newest ``--history`` +
``--hours`` candles of ``../shared/data/candles/binance-futures`` in Binance's formats; the first
``min_history - 1`` are closed at the start (ingest backfills them by REST, the worker's windows fill), the next
``--hours`` close live, one every ``--hour-seconds``. ``ingest`` and the worker run as subprocesses, as an
operator runs them, on fresh topics; the worker serves the newest version in ``$BSE_MODELS_DIR`` (``make demo``
trains one). For every live candle the delay is measured twice, by the one wall clock of this machine:

- ``from_close``: from the candle's close time on the exchange's clock (what a user waits);
- ``from_send``: from the moment the simulator sent the closed kline (the simulator's tick, at most
  ``--tick-seconds``, taken out: ingest + Kafka + worker only).

Prints one JSON object. Run from the repository root:

    .venv/bin/python benchmarks/ingest_delay.py [--hours 60] [--hour-seconds 1.0] [--tick-seconds 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: bse_predict and tests.support

import numpy as np
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from bse_predict.candles.schema import Prediction
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.serving.manifest import load_manifest, newest_version
from configs.settings import load_settings
from tests.support.exchange_sim import HOUR_MS, ExchangeSim, Faults, newest_candles
from tests.support.worker_process import WorkerProcess, service_env

_DATA = Path("../shared/data/candles/binance-futures")


async def _delete_topics(settings) -> None:  # type: ignore[no-untyped-def]
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


async def _measure(args: argparse.Namespace) -> dict[str, object]:
    settings = load_settings(None).model_copy(update={"topic_prefix": f"bench-ingest-{int(time.time())}."})
    await ensure_topics(settings)
    version = newest_version(settings.models_dir)
    history = load_manifest(settings.models_dir / version).min_history
    candles, first = newest_candles(_DATA, [], history - 1 + args.hours)
    logs = Path(tempfile.mkdtemp(prefix="ingest-delay-"))
    env = service_env(settings)
    worker = WorkerProcess(env, logs / "worker.log", ("--version", version)).start(120)
    sim = ExchangeSim(candles, market="futures", start_ms=first + (history - 1) * HOUR_MS + 1, hour_s=args.hour_seconds,
                      tick_s=args.tick_seconds, heartbeat_s=5.0, faults=Faults())
    consumer = AIOKafkaConsumer(TopicNames.of(settings).predictions, **kafka_options(settings),
                                auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    await consumer.start()
    await sim.start()
    ingest_log = (logs / "ingest.log").open("wb")
    ingest = subprocess.Popen(
        [sys.executable, "-m", "bse_predict.cli", "ingest", "--market", "futures", "--symbols", ",".join(candles)],
        env={**os.environ, **env, "BSE_INGEST__FUTURES__REST_URL": sim.rest_url,
             "BSE_INGEST__FUTURES__WS_URL": sim.ws_url, "BSE_INGEST__UPDATE_INTERVAL_S": f"{args.hour_seconds / 4:g}",
             "BSE_INGEST__ROTATE_AFTER_S": f"{20 * args.hour_seconds:g}"},
        stdout=ingest_log, stderr=subprocess.STDOUT, start_new_session=True)
    live = {(s, t) for s, rows in candles.items() for t, *_ in rows if t >= sim.start_ms - 1}
    arrived: dict[tuple[str, int], float] = {}
    early = 0
    deadline = time.monotonic() + args.hours * args.hour_seconds + 120
    try:
        while len(arrived) < len(live) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.time()
                for record in records:
                    p = Prediction.model_validate_json(record.value)
                    key = (p.symbol, p.open_time)
                    if key in live:
                        arrived.setdefault(key, now)
                    else:
                        early += 1
    finally:
        await consumer.stop()
        ingest.terminate()
        ingest.wait(30)
        worker.stop()
        await sim.stop()
        await _delete_topics(settings)
    keys = sorted(arrived, key=lambda k: (k[1], k[0]))
    first_hour = min(k[1] for k in keys) if keys else 0
    from_close = {k: (arrived[k] - sim.close_wall_s(k[1])) * 1000 for k in keys}
    from_send = {k: (arrived[k] - sim.log.closed_sent_wall_s[k]) * 1000 for k in keys if k in sim.log.closed_sent_wall_s}
    slowest = sorted(from_close.items(), key=lambda item: -item[1])[:5]

    def figures(delays: dict[tuple[str, int], float]) -> dict[str, float]:
        values = np.array(list(delays.values()))
        return {q: round(float(np.percentile(values, p)), 1) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))} | {
            "max": round(float(values.max()), 1)}

    def after_first(delays: dict[tuple[str, int], float]) -> dict[tuple[str, int], float]:
        return {k: v for k, v in delays.items() if k[1] > first_hour}

    return {"live_candles": len(live), "predictions": len(arrived), "backfilled_predictions": early,
            "symbols": sorted(candles), "version": version, "hour_seconds": args.hour_seconds,
            "tick_seconds": args.tick_seconds, "delay_ms_from_close": figures(from_close),
            "delay_ms_from_send": figures(from_send),
            "after_the_first_live_hour": {"from_close": figures(after_first(from_close)),
                                          "from_send": figures(after_first(from_send))},
            "slowest_from_close": [{"symbol": k[0], "live_hour": (k[1] - first_hour) // HOUR_MS, "ms": round(v, 1)}
                                   for k, v in slowest],
            "cpus": os.cpu_count(), "python": platform.python_version(), "logs": str(logs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=60, help="live candles per symbol")
    parser.add_argument("--hour-seconds", type=float, default=1.0)
    parser.add_argument("--tick-seconds", type=float, default=0.01)
    print(json.dumps(asyncio.run(_measure(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
