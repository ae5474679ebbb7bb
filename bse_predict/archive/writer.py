"""One flush of the archive over any :class:`DatasetStore`: each dataset partition's folder merged with its
new candles into one file, named after the offsets it holds, and the files it replaces removed.

Order per folder: write the merged file (the store makes it durable and visible at once, or not at all),
then remove the files it supersedes. A crash in between leaves an older file beside a newer one that
holds all its rows; readers keep one row per open time (the highest offset), and the folder's next flush
merges both away. Offsets are committed by the caller only after :func:`write_plan` returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from bse_predict.archive.buffer import FlushPlan, PartitionWrite
from bse_predict.archive.layout import FileName, merged_name
from bse_predict.archive.rows import candles_table, merge_tables

__all__ = ["DatasetStore", "WrittenFile", "write_partition", "write_plan"]


class DatasetStore(Protocol):
    """Where the dataset lives; paths are ``/``-separated, relative to the archive's root."""

    def list_files(self, directory: str) -> list[str]:
        """The names of the files in ``directory`` (none when it does not exist), hidden ones left out."""

    def read(self, directory: str, name: str) -> pa.Table: ...

    def write(self, directory: str, file: FileName, table: pa.Table) -> None:
        """Write ``table`` as ``directory/file.name``: when this returns it is durable and whole; a reader
        never sees a part of it. Replaces a file of the same name."""

    def remove(self, directory: str, names: list[str]) -> None:
        """Remove these files, durably."""

    def describe(self) -> str: ...


@dataclass(frozen=True)
class WrittenFile:
    path: str
    rows: int
    candles: int  # candles of the flush in it
    added: int  # open times the folder did not hold before
    replaced: tuple[str, ...]


def write_partition(store: DatasetStore, write: PartitionWrite) -> WrittenFile:
    directory = write.key.directory
    names = store.list_files(directory)
    ours = {n: parsed for n in names if (parsed := FileName.parse(n)) is not None}
    existing = [store.read(directory, n) for n in sorted(ours)]
    merged = merge_tables(existing, candles_table(write.candles))
    target = merged_name(write.file, ours.values())
    store.write(directory, target, merged.table)
    superseded = sorted(n for n in ours if n != target.name)
    if superseded:
        store.remove(directory, superseded)
    return WrittenFile(f"{directory}/{target.name}", merged.table.num_rows, len(write.candles), merged.added,
                       tuple(superseded))


def write_plan(store: DatasetStore, plan: FlushPlan) -> list[WrittenFile]:
    """Every write of the plan, in order; raises on the first failure (nothing is then committed)."""
    return [write_partition(store, write) for write in plan.writes]
