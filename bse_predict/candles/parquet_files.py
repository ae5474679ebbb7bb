"""Candle files in Parquet: one ``.parquet`` file, or a dataset (a folder or an object-store URL) such as
``bse-predict archive`` writes, hive-partitioned ``market=M/symbol=S/month=YYYY-MM/``.

The columns are those of the CSV files (``open_time_ms,open,high,low,close,volume``), plus optional
``timeframe``, ``symbol`` (when no ``symbol=`` partition says it) and the archive's
``kafka_partition`` and ``kafka_offset``. A source holds one series per market, symbol and
timeframe; a repeated open time keeps the row with the highest ``kafka_offset`` (the archive's
"last offset wins"), and among rows without offsets the last one of the last file, files taken in
path order. Every dropped repeat is counted in ``CandleSeries.duplicates_dropped``.

A plain folder of CSV files stays a CSV source (:mod:`bse_predict.candles.files`); a folder with no
CSV file at its top but ``.parquet`` files below is a Parquet dataset. Object-store URLs
(``s3://bucket/prefix``, ``gs://...``) are opened with ``pyarrow.fs.FileSystem.from_uri``; a URL that
passed through :class:`pathlib.Path` (``s3:/bucket``) is read as the URL it was.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from configs.settings import TIMEFRAME_MS

if TYPE_CHECKING:  # pyarrow is imported only where Parquet is read: the CSV path never loads it
    import pyarrow as pa
    import pyarrow.fs as pafs

    from bse_predict.candles.files import CandleSeries

__all__ = ["PYARROW_MISSING", "ARCHIVE_COLUMNS", "PARTITION_KEYS", "archive_schema", "as_location", "is_parquet_source",
           "open_location", "read_parquet_candles", "ParquetSource"]

ARCHIVE_COLUMNS = ("open_time_ms", "open", "high", "low", "close", "volume", "timeframe", "kafka_partition",
                   "kafka_offset")
"""The columns of every file the archive writes (the partition keys live in the path only)."""
PARTITION_KEYS = ("market", "symbol", "month")
_PRICES = ("open", "high", "low", "close", "volume")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_FLATTENED_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/(?!/)")
_NAME = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<timeframe>\d+[mhd])\.parquet$")

ParquetSource = str | Path
PYARROW_MISSING = "Parquet needs pyarrow, which is not installed: pip install 'bse-predict[archive]'"


def archive_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("open_time_ms", pa.int64()), *[(c, pa.float64()) for c in _PRICES],
                      ("timeframe", pa.string()), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64())])


def as_location(source: ParquetSource) -> str | Path:
    """A URL stays (or becomes again, after :class:`Path` folded its ``//``) a URL string; else a Path."""
    text = str(source)
    if _URL.match(text):
        return text
    flattened = _FLATTENED_URL.match(text)
    if isinstance(source, Path) and flattened and not Path(text).exists():
        scheme, rest = flattened["scheme"], text[flattened.end():]
        return f"file:///{rest}" if scheme == "file" else f"{scheme}://{rest}"
    return Path(source)


def open_location(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system and the path inside it of a local path or an object-store URL."""
    import pyarrow.fs as pafs

    if isinstance(location, Path):
        return pafs.LocalFileSystem(), str(location.resolve())
    return pafs.FileSystem.from_uri(location)


def is_parquet_source(source: ParquetSource) -> bool:
    """True for a ``.parquet`` file, an object-store URL, or a folder that holds no CSV candle file at its
    top but ``.parquet`` files somewhere below."""
    location = as_location(source)
    if isinstance(location, str):
        return True
    if location.is_file():
        return location.name.endswith(".parquet")
    if location.is_dir():
        if any(p.name.endswith((".csv", ".csv.gz")) for p in location.iterdir()):
            return False
        return any(not p.name.startswith((".", "_")) for p in location.rglob("*.parquet"))
    return False


def read_parquet_candles(source: ParquetSource, default_timeframe: str = "1h") -> list[CandleSeries]:
    """Every series of a Parquet file or dataset, as :class:`~bse_predict.candles.files.CandleSeries`."""
    from bse_predict.candles.files import CandleFileError, CandleSeries  # the series type lives with the CSV reader

    location = as_location(source)
    table, named_symbol, named_timeframe = _read_table(location)
    if table.num_rows == 0:
        raise CandleFileError(f"{location} holds no candle rows")
    missing = [c for c in ("open_time_ms", *_PRICES) if c not in table.column_names]
    if missing:
        raise CandleFileError(f"{location}: no column {', '.join(missing)} (needs open_time_ms,{','.join(_PRICES)})")
    rows = table.num_rows
    symbols = _strings(table, "symbol", named_symbol, rows)
    if any(s is None for s in symbols):
        raise CandleFileError(f"{location}: rows without a symbol (no symbol column, no symbol= partition, and the "
                              "name is not SYMBOL-TIMEFRAME.parquet)")
    markets = _strings(table, "market", "", rows)
    timeframes = [t or default_timeframe for t in _strings(table, "timeframe", named_timeframe, rows)]
    unknown = sorted({t for t in timeframes if t not in TIMEFRAME_MS})
    if unknown:
        raise CandleFileError(f"{location}: unknown timeframe {unknown[0]!r}")
    times = table.column("open_time_ms").to_numpy(zero_copy_only=False).astype(np.int64)
    ohlcv = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in _PRICES])
    offsets = (table.column("kafka_offset").to_numpy(zero_copy_only=False).astype(np.float64)
               if "kafka_offset" in table.column_names else np.full(rows, np.nan))
    offsets = np.where(np.isnan(offsets), -1.0, offsets)  # rows without an offset rank below any archived one
    order_in_source = np.arange(rows)
    groups: dict[tuple[str, str, str], list[int]] = {}
    for index, key in enumerate(zip(markets, symbols, timeframes, strict=True)):
        groups.setdefault(key, []).append(index)  # type: ignore[arg-type]
    series = []
    base = location if isinstance(location, Path) else Path(location)
    lone_file = isinstance(location, Path) and location.is_file()
    for (market, symbol, timeframe), members in sorted(groups.items()):
        picked = np.asarray(members)
        # newest last: by open time, then offset, then the row's place in the file order
        order = picked[np.lexsort((order_in_source[picked], offsets[picked], times[picked]))]
        ordered_times = times[order]
        keep = np.append(ordered_times[1:] != ordered_times[:-1], True)
        where = base / f"market={market}" if market and not lone_file else base
        series.append(CandleSeries(symbol, timeframe, ordered_times[keep], np.ascontiguousarray(ohlcv[order][keep]),
                                   where, int((~keep).sum())))
    return series


def _strings(table: pa.Table, column: str, default: str | None, rows: int) -> list[str | None]:
    if column in table.column_names:
        values = table.column(column).cast("string").to_pylist()
        return [v if v is not None else default for v in values]
    return [default] * rows


def _read_table(location: str | Path) -> tuple[pa.Table, str | None, str | None]:
    """The rows of every file, in path order, with the hive partition columns; and the symbol and
    timeframe that a lone file's name gives (``BTCUSDT-1h.parquet``), if any."""
    from bse_predict.candles.files import CandleFileError

    try:
        import pyarrow as pa
        import pyarrow.dataset as ds
        from pyarrow.lib import ArrowInvalid
    except ImportError:
        raise CandleFileError(f"{location}: {PYARROW_MISSING}") from None

    try:
        filesystem, path = open_location(location)
    except (ArrowInvalid, OSError) as exc:
        raise CandleFileError(f"{location}: pyarrow cannot open it ({str(exc).splitlines()[0]})") from exc
    partitioning = ds.partitioning(pa.schema([(k, pa.string()) for k in PARTITION_KEYS]), flavor="hive")
    try:
        dataset = ds.dataset(path, format="parquet", filesystem=filesystem, partitioning=partitioning)
    except (ArrowInvalid, OSError, FileNotFoundError) as exc:
        raise CandleFileError(f"{location}: not a readable Parquet file or dataset ({str(exc).splitlines()[0]})") from exc
    files = sorted(dataset.files)
    if not files:
        raise CandleFileError(f"{location} holds no .parquet file")
    tables = []
    for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
        try:
            part = fragment.to_table(schema=dataset.schema)
        except (ArrowInvalid, OSError) as exc:
            raise CandleFileError(f"{fragment.path}: {str(exc).splitlines()[0]}") from exc
        tables.append(part)
    table = pa.concat_tables(tables, promote_options="permissive")
    if len(files) == 1 and files[0] == path:  # a lone file: hive keys from its folders, or SYMBOL-TF.parquet
        folders = dict(part.split("=", 1) for part in path.split("/")[:-1] if "=" in part)
        for key in PARTITION_KEYS:
            if key in folders and key not in table.column_names:
                table = table.append_column(key, pa.array([folders[key]] * table.num_rows, pa.string()))
        match = _NAME.match(path.rsplit("/", 1)[-1])
        if match:
            return table, match["symbol"], match["timeframe"]
    return table, None, None
