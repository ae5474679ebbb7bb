"""The golden replay: a fixed candle sequence, two small shipped versions, and every message it yields.

``tests/integration/test_golden_replay.py`` replays :func:`golden_records` through a
real worker serving ``v-golden`` live with ``v-golden-b`` in shadow, and compares
every record of ``predictions``, ``predictions.shadow``, ``outcomes`` and
``candles.dlq`` byte for byte with ``tests/data/golden/messages.jsonl``, the output
recorded before the code was reorganised. Only what depends on the wall clock is
blanked, and the test's random topic prefix removed (:func:`normalised`). Both versions are RandomForests: a tree's answer is a
sum of stored leaf values, so the bytes do not depend on the CPU's floating-point
kernels the way an LSTM's or an HMM's would.

Regenerate (only when a message is meant to change, and say so in the commit)::

    python -m tests.support.golden models   # the two versions (once; they are committed)
    BSE_GOLDEN_RECORD=1 pytest tests/integration/test_golden_replay.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import orjson

from configs.settings import load_settings
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.stream.replay import candle_records

__all__ = ["GOLDEN_DIR", "LIVE_VERSION", "SHADOW_VERSION", "golden_records", "normalised", "make_models"]

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"
LIVE_VERSION = "v-golden"
SHADOW_VERSION = "v-golden-b"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
FIRST_OPEN_MS = 1_772_323_200_000  # 2026-03-01 00:00 UTC
HOURS = 260  # 168 to fill the window, 92 predicted per symbol, the last ones' outcomes still open

_WALL_CLOCK_FIELDS = re.compile(rb'"(latency_ms|received_at_ms)":[-0-9.eE+]+')


def normalised(value: bytes, topic_prefix: str) -> bytes:
    """The record's bytes with the fields that measure wall-clock time set to 0 and the test's own
    topic prefix (in a dead letter's ``source_topic``) removed."""
    return _WALL_CLOCK_FIELDS.sub(rb'"\1":0', value).replace(f'"{topic_prefix}'.encode(), b'"')


def golden_records(series: dict[str, CandleSeries]) -> list[tuple[bytes | None, bytes]]:
    """The replay: ``HOURS`` hours of three futures symbols, one in-progress update before each
    closed candle, every 40th closed candle sent again right after, and five invalid records."""
    sliced = []
    for symbol in SYMBOLS:
        one = series[symbol]
        rows = (one.open_time_ms >= FIRST_OPEN_MS) & (one.open_time_ms < FIRST_OPEN_MS + HOURS * 3_600_000)
        sliced.append(CandleSeries(one.symbol, one.timeframe, one.open_time_ms[rows], one.ohlcv[rows], one.source))
    records: list[tuple[bytes | None, bytes]] = []
    for index, record in enumerate(candle_records(sliced, updates=1)):
        records.append((record.symbol.encode(), record.payload))
        if record.closed and index % 80 == 1:
            records.append((record.symbol.encode(), record.payload))
    bad_candle = orjson.loads(records[10][1])
    invalid: list[tuple[bytes | None, bytes]] = [
        (b"BTCUSDT", b"not json"),
        (b"ETHUSDT", orjson.dumps({**bad_candle, "symbol": "ETHUSDT", "low": -1.0})),
        (b"SOLUSDT", orjson.dumps({**bad_candle})),  # key is not the symbol
        (b"", orjson.dumps(bad_candle)),  # an empty key (a missing one would land on a random partition)
        (b"BTCUSDT", b'{"symbol": "BTCUSDT", "symbol": "ETHUSDT"}'),
    ]
    for position, record in zip((5, 300, 900, 1200, 1500), invalid, strict=True):
        records.insert(position, record)
    return records


def make_models(models_dir: Path) -> None:
    """Train the two shipped versions on the newest 1,500 h of BTC, ETH, SOL futures: the shadow first,
    so that the live one is the newest version in the folder."""
    from bse_predict.training.train import train_version

    futures = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "candles" / "binance-futures"
    series = read_candle_files([futures])
    families = {name: {"enabled": False} for name in load_settings().models.families}
    for version, params in ((SHADOW_VERSION, {"n_estimators": 6, "max_depth": 3, "min_samples_leaf": 60, "seed": 5}),
                            (LIVE_VERSION, {"n_estimators": 8, "max_depth": 4, "min_samples_leaf": 60, "seed": 3})):
        settings = load_settings(models_dir=str(models_dir), training={"max_rows_per_symbol": 1500},
                                 models={"served": "random_forest",
                                         "families": {**families, "random_forest": {"enabled": True, "params": params}}})
        train_version(series, settings, version, show_progress=False)


if __name__ == "__main__" and sys.argv[1:] == ["models"]:
    make_models(GOLDEN_DIR / "models")
