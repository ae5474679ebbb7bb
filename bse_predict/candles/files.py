"""Read candle files of the contract: CSV, optionally gzip, and Parquet.

Header ``open_time_ms,open,high,low,close,volume``; the symbol comes from a
``symbol`` column or from the file name ``SYMBOL-TIMEFRAME.csv[.gz]``. A
directory means every such file in it. Rows are sorted by time; a repeated
open_time keeps its last row and is counted, never dropped silently.

A ``.parquet`` file, a folder holding a Parquet dataset (no CSV at its top,
``.parquet`` files below: what ``bse-predict archive`` writes) or an
object-store URL is read by :mod:`bse_predict.candles.parquet_files` into the
same series, one per market, symbol and timeframe, deduplicated by open time
(the highest Kafka offset, else the last file, wins).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configs.settings import TIMEFRAME_MS
from bse_predict.candles.parquet_files import ParquetSource, is_parquet_source, read_parquet_candles
from bse_predict.errors import BsePredictError

__all__ = ["CandleSeries", "CandleFileError", "read_candle_files", "expand_paths"]

_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<timeframe>\d+[mhd])\.csv(\.gz)?$")
_COLUMNS = ("open_time_ms", "open", "high", "low", "close", "volume")


class CandleFileError(BsePredictError):
    """A candle file that cannot be read as the contract describes."""


@dataclass(frozen=True)
class CandleSeries:
    """One symbol's closed candles from one source, sorted by open time."""

    symbol: str
    timeframe: str
    open_time_ms: np.ndarray
    ohlcv: np.ndarray
    source: Path
    duplicates_dropped: int = 0

    @property
    def step_ms(self) -> int:
        return TIMEFRAME_MS[self.timeframe]

    def tail(self, rows: int) -> CandleSeries:
        return CandleSeries(self.symbol, self.timeframe, self.open_time_ms[-rows:], self.ohlcv[-rows:],
                            self.source, self.duplicates_dropped)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, directories expanded to their candle files (sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.endswith((".csv", ".csv.gz")))
            if not found:
                raise CandleFileError(f"{path} holds no .csv, .csv.gz or .parquet candle file")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CandleFileError(f"{path} does not exist")
    return files


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _series(symbol: str, timeframe: str, rows: list[tuple[float, ...]], source: Path) -> CandleSeries:
    table = np.asarray(rows, dtype=np.float64)
    times = table[:, 0].astype(np.int64)
    order = np.argsort(times, kind="stable")
    times, ohlcv = times[order], table[order, 1:6]
    keep = np.append(times[1:] != times[:-1], True)
    return CandleSeries(symbol, timeframe, times[keep], np.ascontiguousarray(ohlcv[keep]), source, int((~keep).sum()))


def _read_one(path: Path, default_timeframe: str) -> list[CandleSeries]:
    match = _NAME.match(path.name)
    timeframe = match["timeframe"] if match else default_timeframe
    if timeframe not in TIMEFRAME_MS:
        raise CandleFileError(f"{path.name}: unknown timeframe {timeframe!r}")
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or not set(_COLUMNS) <= set(header):
            raise CandleFileError(f"{path.name}: header must hold {','.join(_COLUMNS)} (got {header})")
        index = [header.index(c) for c in _COLUMNS]
        symbol_index = header.index("symbol") if "symbol" in header else None
        if symbol_index is None and not match:
            raise CandleFileError(f"{path.name}: no symbol column and the name is not SYMBOL-TIMEFRAME.csv[.gz]")
        by_symbol: dict[str, list[tuple[float, ...]]] = {}
        for line_number, row in enumerate(reader, start=2):
            symbol = row[symbol_index] if symbol_index is not None else match["symbol"]
            try:
                by_symbol.setdefault(symbol, []).append(tuple(float(row[i]) for i in index))
            except (ValueError, IndexError) as exc:
                raise CandleFileError(f"{path.name} line {line_number}: {exc}") from exc
    if not by_symbol:
        raise CandleFileError(f"{path.name} holds no candle rows")
    return [_series(symbol, timeframe, rows, path) for symbol, rows in sorted(by_symbol.items())]


def read_candle_files(paths: Iterable[ParquetSource], default_timeframe: str = "1h") -> list[CandleSeries]:
    """Every series in the given files, directories, Parquet datasets and object-store URLs."""
    series: list[CandleSeries] = []
    for path in paths:
        if is_parquet_source(path):
            series.extend(read_parquet_candles(path, default_timeframe))
        else:
            for one in expand_paths([Path(path)]):
                series.extend(_read_one(one, default_timeframe))
    return series
