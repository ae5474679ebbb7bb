"""Latency of the dashboard's pages with a full board: 100 symbols × a week of history.

The board is filled as the feed fills it, with the contract's messages: for each symbol
``history_hours + chart_extra_hours`` (240) real closed candles (``../shared/data/candles/binance-spot``:
its 20 series, each taken at 5 different weeks, shifted to end at the same hour), a generated call for each
of the last ``history_hours`` (168) candles (three targets, probabilities drawn from a Dirichlet, signals
by the configured thresholds), each target's outcome drawn from the call's own probabilities once its
horizon passed in the week (and for a shadow version too), ``recent_events`` control events and dead
letters. Then the real app (:func:`bse_predict.dashboard.web.build_app`, the real Redis reads, a token)
runs in uvicorn on a thread of its own, and each page is requested ``--requests`` times over one
keep-alive HTTP connection after ``--warmup`` requests; p50 and p99 of the wall time per request
(request sent to body read), in milliseconds. The call view is timed with its explanation refused at
once (no native model in an empty models folder): what its explanation adds depends on the version's
model (loading it the first time, then the decomposition) and is not measured here.

With ``--freeze``, after filling the board: ``gc.collect(); gc.freeze()``, as ``bse-predict dashboard``
does once its feed has read the lookback; ``full_gc`` counts the generation-2 collections during the
requests and their longest pause either way.

Also the board's memory (``tracemalloc``: what filling it allocated and kept). Needs Redis (the control
state and the live scores are read on each operations and track-record request; under a fresh key prefix,
so they are empty). Prints one JSON object. Run from the repository root:

    .venv/bin/python benchmarks/dashboard_latency.py [--symbols 100] [--requests 200] [--warmup 10]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from pydantic import SecretStr

from configs.settings import Settings, load_settings
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.candles.schema import Candle, ModelRef, Outcome, Prediction, prediction_id
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.explanations import OnDemandExplanations
from bse_predict.dashboard.run import redis_reads
from bse_predict.dashboard.web import build_app
from bse_predict.explain.explainer import Explainer
from bse_predict.labels.first_touch import CLASS_NAMES
from bse_predict.serving.signals import target_predictions

ROOT = Path(__file__).resolve().parents[1]
SPOT = ROOT.parent / "shared" / "data" / "candles" / "binance-spot"
HOUR_MS = 3_600_000
TOKEN = "benchmark-token"


def _symbols(series: list[CandleSeries], count: int, hours: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``count`` symbols of ``hours`` candles each: the series in turn, each week further back, shifted
    in time to end where the first one ends."""
    end_ms = int(series[0].open_time_ms[-1])
    chosen = {}
    for i in range(count):
        one, week = series[i % len(series)], i // len(series)
        stop = len(one.open_time_ms) - week * hours
        times, ohlcv = one.open_time_ms[stop - hours:stop], one.ohlcv[stop - hours:stop]
        name = one.symbol if week == 0 else f"{one.symbol}-W{week}"
        chosen[name] = (times - times[-1] + end_ms, ohlcv)
    return chosen


def fill(board: Board, settings: Settings, symbols: dict[str, tuple[np.ndarray, np.ndarray]], seed: int) -> int:
    """The board as a week of a live fleet leaves it; returns the number of outcomes added."""
    rng = np.random.default_rng(seed)
    config = settings.dashboard
    horizon = settings.market.horizon_candles
    targets = [f"{pct:g}%" for pct in settings.market.targets_pct]
    outcomes = 0
    for symbol, (times, ohlcv) in symbols.items():
        for t, (o, h, lo, c, v) in zip(times.tolist(), ohlcv.tolist(), strict=True):
            board.add_candle(Candle(symbol=symbol, timeframe="1h", open_time=t, open=o, high=h, low=lo, close=c,
                                    volume=v))
        newest = int(times[-1])
        for row in range(len(times) - config.history_hours, len(times)):
            t = int(times[row])
            parts = {target: target_predictions(rng.dirichlet([3, 3, 2], 1), settings.signals, target)[0]
                     for target in targets}
            call = Prediction.model_validate({
                "id": prediction_id(symbol, "1h", t), "symbol": symbol, "timeframe": "1h", "open_time": t,
                "close": float(ohlcv[row, 3]), "horizon_hours": horizon,
                "targets": {k: p.model_dump() for k, p in parts.items()},
                "model": {"name": "ensemble", "version": "v1"}, "latency_ms": 1.0})
            board.add_prediction(call)
            resolved_at = t + (horizon + 1) * HOUR_MS
            if resolved_at > newest:
                continue
            for target, p in parts.items():
                probabilities = np.array([p.p_up, p.p_down, p.p_none])
                for version, stream in (("v1", "live"), ("v2", "shadow")):
                    board.add_outcome(Outcome(
                        id=call.id, symbol=symbol, open_time=t, target=target,
                        outcome=CLASS_NAMES[int(rng.choice(3, p=probabilities))], resolved_at=resolved_at,
                        model=ModelRef(name="ensemble", version=version), p_up=p.p_up, p_down=p.p_down,
                        p_none=p.p_none, stream=stream))
                    outcomes += 1
    for n in range(config.recent_events):
        board.add_control_event({"status": "applied" if n % 3 else "refused", "command": "promote",
                                 "at": "2026-01-01T00:00:00Z", "issued_by": "ops", "reason": f"event {n}"})
        board.add_dead_letter({"kind": ("json", "schema", "bad_symbol")[n % 3], "key": "BTCUSDT",
                               "reason": f"dead letter {n}", "received_at_ms": newest})
    return outcomes


def _full_gc_pauses() -> list[float]:
    """The wall time (ms) of every generation-2 collection from now on, appended as they end."""
    pauses: list[float] = []
    started: list[float] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append((time.perf_counter() - started.pop()) * 1000)

    gc.callbacks.append(watch)
    return pauses


def _serve(app: object) -> tuple[uvicorn.Server, int]:
    """uvicorn on a port the system picks, on a thread of its own; the server and its port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           access_log=False, lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 30 s")
        time.sleep(0.05)
    return server, server.servers[0].sockets[0].getsockname()[1]


def _time(client: httpx.Client, path: str, requests: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        client.get(path).raise_for_status()
    wall_ms = []
    size = 0
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path)
        wall_ms.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = len(response.content)
    quantiles = statistics.quantiles(wall_ms, n=100, method="inclusive")
    return {"p50_ms": round(statistics.median(wall_ms), 2), "p99_ms": round(quantiles[98], 2),
            "max_ms": round(max(wall_ms), 2), "kib": round(size / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--freeze", action="store_true", help="gc.collect(); gc.freeze() after filling the board")
    args = parser.parse_args()

    settings = load_settings(topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    config = settings.dashboard
    series = read_candle_files([SPOT])
    symbols = _symbols(series, args.symbols, config.history_hours + config.chart_extra_hours)

    tracemalloc.start()
    board = Board(config, settings.signals.round_trip_cost_pct)
    filled_at = time.perf_counter()
    outcomes = fill(board, settings, symbols, args.seed)
    fill_s = time.perf_counter() - filled_at
    board_mib = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    if args.freeze:
        gc.collect()
        gc.freeze()
    pauses = _full_gc_pauses()

    _, reads = redis_reads(settings)  # its client ends with this process
    with tempfile.TemporaryDirectory() as empty_models:
        explanations = OnDemandExplanations(reads.candles, Explainer(Path(empty_models)), 10.0)
        app = build_app(board, asyncio.Condition(), reads.control, reads.scores, explanations.explain,
                        SecretStr(TOKEN), reads.challenger)
        server, port = _serve(app)
        symbol = next(iter(symbols))
        call_ms = board.symbols[symbol].calls[-1].prediction.open_time
        pages = {"markets": "/", "symbol": f"/symbol/{symbol}?target=2%25",
                 "call": f"/symbol/{symbol}/call/{call_ms}?target=2%25", "operations": "/operations",
                 "track_record": "/track-record", "track_record_24h": "/track-record?period=24h"}
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
            timings = {name: _time(client, path, args.requests, args.warmup) for name, path in pages.items()}
        server.should_exit = True
        explanations.close()
    print(json.dumps({
        "symbols": len(board.symbols), "calls": sum(len(s.calls) for s in board.symbols.values()),
        "candles": sum(len(s.candles) for s in board.symbols.values()), "outcomes": outcomes,
        "fill_s": round(fill_s, 2), "board_mib": round(board_mib, 1), "requests": args.requests,
        "frozen_objects": gc.get_freeze_count(), "tracked_objects": len(gc.get_objects()),
        "full_gc": {"count": len(pauses), "max_ms": round(max(pauses, default=0.0), 1)},
        "pages": timings}, indent=2))


if __name__ == "__main__":
    main()
