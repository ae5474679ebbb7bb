"""The golden replay: generated candles, two small versions trained on generated candles, and every message.

``tests/integration/test_golden_replay.py`` replays :func:`golden_records` through a
real worker serving ``v-golden`` live with ``v-golden-b`` in shadow, and compares
every record of ``predictions``, ``predictions.shadow``, ``outcomes`` and
``candles.dlq`` byte for byte with ``tests/data/golden/messages.jsonl``, the output
recorded with the code as it was before the reorganisation into one package per
concept (commit 19e2bce). Only what depends on the wall clock is blanked, and the
test's random topic prefix removed (:func:`normalised`).

Everything here is generated (:func:`make_data`), nothing comes from ``../shared``:
three made-up symbols from :func:`~bse_predict.candles.synthetic.synthetic_series`,
the first 1,500 hours of each to train the two versions (RandomForests of 8 and 6
trees; a tree's answer is a sum of stored leaf values, so the bytes do not depend
on the CPU's floating-point kernels the way an LSTM's or an HMM's would), the last
260 hours written as the replay's candle files. The versions keep only what serving
reads (ONNX graphs, parity samples, manifest); the native pickles are dropped.

Regenerate (only when a message is meant to change, and say so in the commit)::

    python -m tests.support.golden data     # candles and versions (committed)
    BSE_GOLDEN_RECORD=1 pytest tests/integration/test_golden_replay.py
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import orjson

from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.candles.synthetic import synthetic_series
from bse_predict.serving.manifest import MANIFEST_NAME
from bse_predict.stream.replay import candle_records
from configs.settings import load_settings

__all__ = ["GOLDEN_DIR", "LIVE_VERSION", "SHADOW_VERSION", "golden_records", "normalised", "make_data"]

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"
LIVE_VERSION = "v-golden"
SHADOW_VERSION = "v-golden-b"
SYMBOLS = {"ALPHAUSDT": (11, 100.0), "BETAUSDT": (12, 20.0), "GAMMAUSDT": (13, 3.0)}  # seed, first price
TRAIN_HOURS = 1500
HOURS = 260  # replayed: 168 to fill the window, 92 predicted per symbol, the last ones' outcomes still open
LAST_OPEN_MS = 1_772_323_200_000 + (HOURS - 1) * 3_600_000  # the replay runs from 2026-03-01 00:00 UTC

_WALL_CLOCK_FIELDS = re.compile(rb'"(latency_ms|received_at_ms)":[-0-9.eE+]+')


def normalised(value: bytes, topic_prefix: str) -> bytes:
    """The record's bytes with the fields that measure wall-clock time set to 0 and the test's own
    topic prefix (in a dead letter's ``source_topic``) removed."""
    return _WALL_CLOCK_FIELDS.sub(rb'"\1":0', value).replace(f'"{topic_prefix}'.encode(), b'"')


def golden_records() -> list[tuple[bytes | None, bytes]]:
    """The replay: the ``HOURS`` hours of ``candles/`` for the three symbols, one in-progress update
    before each closed candle, every 80th record's closed candle sent again right after, and five
    invalid records."""
    series = sorted(read_candle_files([GOLDEN_DIR / "candles"]), key=lambda s: s.symbol)
    records: list[tuple[bytes | None, bytes]] = []
    for index, record in enumerate(candle_records(series, updates=1)):
        records.append((record.symbol.encode(), record.payload))
        if record.closed and index % 80 == 1:
            records.append((record.symbol.encode(), record.payload))
    bad_candle = orjson.loads(records[10][1])
    invalid: list[tuple[bytes | None, bytes]] = [
        (b"ALPHAUSDT", b"not json"),
        (b"BETAUSDT", orjson.dumps({**bad_candle, "symbol": "BETAUSDT", "low": -1.0})),
        (b"GAMMAUSDT", orjson.dumps({**bad_candle})),  # key is not the symbol
        (b"", orjson.dumps(bad_candle)),  # an empty key (a missing one would land on a random partition)
        (b"ALPHAUSDT", b'{"symbol": "ALPHAUSDT", "symbol": "BETAUSDT"}'),
    ]
    for position, record in zip((5, 300, 900, 1200, 1500), invalid, strict=True):
        records.insert(position, record)
    return records


def make_data(golden_dir: Path) -> None:
    """The replay's candle files and the two versions, trained on the hours before them: the shadow
    first, so that the live one is the newest version in the folder."""
    from bse_predict.training.train import train_version

    training, replayed = [], []
    for symbol, (seed, price) in SYMBOLS.items():
        whole = synthetic_series(symbol, TRAIN_HOURS + HOURS, seed, LAST_OPEN_MS, start_price=price)
        training.append(_rows(whole, slice(0, TRAIN_HOURS)))
        replayed.append(_rows(whole, slice(TRAIN_HOURS, None)))
    (golden_dir / "candles").mkdir(parents=True, exist_ok=True)
    for one in replayed:
        _write_csv(one, golden_dir / "candles" / f"{one.symbol}-1h.csv")
    families = {name: {"enabled": False} for name in load_settings().models.families}
    for version, params in ((SHADOW_VERSION, {"n_estimators": 6, "max_depth": 3, "min_samples_leaf": 60, "seed": 5}),
                            (LIVE_VERSION, {"n_estimators": 8, "max_depth": 4, "min_samples_leaf": 60, "seed": 3})):
        settings = load_settings(models_dir=str(golden_dir / "models"),
                                 models={"served": "random_forest",
                                         "families": {**families, "random_forest": {"enabled": True, "params": params}}})
        train_version(training, settings, version, show_progress=False)
        _drop_native_files(golden_dir / "models" / version)


def _rows(series: CandleSeries, rows: slice) -> CandleSeries:
    return CandleSeries(series.symbol, series.timeframe, series.open_time_ms[rows], series.ohlcv[rows], series.source)


def _write_csv(series: CandleSeries, path: Path) -> None:
    lines = ["open_time_ms,open,high,low,close,volume"]
    lines += [f"{t},{o!r},{h!r},{lo!r},{c!r},{v!r}" for t, (o, h, lo, c, v)
              in zip(series.open_time_ms.tolist(), series.ohlcv.tolist(), strict=True)]
    path.write_text("\n".join(lines) + "\n")


def _drop_native_files(version_dir: Path) -> None:
    """Remove the native pickles of a version and every mention of them in its (unsigned) manifest."""
    manifest_path = version_dir / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["models"]:
        entry["native_file"] = None
    manifest["files_sha256"] = {name: digest for name, digest in manifest["files_sha256"].items()
                                if not name.startswith("native/")}
    manifest_path.write_text(json.dumps(manifest))
    shutil.rmtree(version_dir / "native")


if __name__ == "__main__" and sys.argv[1:] == ["data"]:
    make_data(GOLDEN_DIR)
