"""The archive's rows as Arrow tables, and the merge that keeps one row per open time.

A file holds the columns of :data:`~bse_predict.candles.parquet_files.ARCHIVE_COLUMNS`; the market,
symbol and month are in its folder's name. Merging a folder's files with new candles keeps, for each
open time, the row with the highest Kafka offset (the last value sent); between equal offsets (the
same record read twice, a replay) the newer copy, which holds the same values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from bse_predict.archive.buffer import ArchivedCandle
from bse_predict.candles.parquet_files import ARCHIVE_COLUMNS, archive_schema

__all__ = ["candles_table", "merge_tables", "Merged"]


def candles_table(candles: Sequence[ArchivedCandle]) -> pa.Table:
    """One row per candle, in the archive's schema."""
    columns = {
        "open_time_ms": [a.candle.open_time for a in candles],
        "open": [a.candle.open for a in candles],
        "high": [a.candle.high for a in candles],
        "low": [a.candle.low for a in candles],
        "close": [a.candle.close for a in candles],
        "volume": [a.candle.volume for a in candles],
        "timeframe": [a.candle.timeframe for a in candles],
        "kafka_partition": [a.partition for a in candles],
        "kafka_offset": [a.offset for a in candles],
    }
    return pa.table(columns, schema=archive_schema())


class Merged:
    """The merged table and how many rows the merge dropped as repeats."""

    def __init__(self, table: pa.Table, dropped: int, added: int) -> None:
        self.table = table
        self.dropped = dropped
        self.added = added  # open times that no existing file held


def merge_tables(existing: Sequence[pa.Table], new: pa.Table) -> Merged:
    """``existing`` (a folder's files, in name order) and ``new`` as one table: one row per
    (open time, timeframe), the highest offset winning, sorted by open time."""
    schema = archive_schema()
    parts = [t.select(list(ARCHIVE_COLUMNS)).cast(schema) for t in existing] + [new.cast(schema)]
    table = pa.concat_tables(parts)
    rows = table.num_rows
    times = table.column("open_time_ms").to_numpy()
    offsets = table.column("kafka_offset").to_numpy()
    timeframes = np.asarray(table.column("timeframe").to_pylist(), dtype=object)
    _, frame_codes = np.unique(timeframes, return_inverse=True)
    arrival = np.arange(rows)  # the later copy wins a tie
    order = np.lexsort((arrival, offsets, times, frame_codes))
    last = np.ones(rows, dtype=bool)
    same_key = (times[order][1:] == times[order][:-1]) & (frame_codes[order][1:] == frame_codes[order][:-1])
    last[:-1] = ~same_key
    kept = order[last]
    kept = kept[np.lexsort((frame_codes[kept], times[kept]))]
    existing_times = set(np.concatenate([t.column("open_time_ms").to_numpy() for t in existing]).tolist()) \
        if existing else set()
    added = len(set(new.column("open_time_ms").to_numpy().tolist()) - existing_times)
    return Merged(table.take(pa.array(kept)), rows - len(kept), added)
