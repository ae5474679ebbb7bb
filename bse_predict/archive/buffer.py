"""What the archiver holds between flushes, and which offsets it may commit.

Closed candles wait here, one per (symbol, open time): a later offset replaces an earlier one (the
last offset wins; within one Kafka partition offsets grow, and a symbol lives in one partition). Every
record read, archived or skipped, moves its partition's read position. A flush takes a
:class:`FlushPlan`: the candles grouped by dataset partition, the file name each group is written
under, and the offsets to commit once every file is durable. Until then nothing is committable on a
partition that holds a candle: a commit never passes a candle that is not on disk. A partition whose
records were all skipped may be committed at any time (:meth:`ArchiveBuffer.idle_commits`).

Pure: the time is passed in, nothing here touches Kafka or a file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bse_predict.archive.layout import FileName, PartitionKey, partition_key
from bse_predict.candles.schema import Candle

__all__ = ["ArchivedCandle", "PartitionWrite", "FlushPlan", "ArchiveBuffer", "flush_due"]


@dataclass(frozen=True)
class ArchivedCandle:
    """A closed candle and the Kafka record it came in."""

    candle: Candle
    partition: int
    offset: int


@dataclass(frozen=True)
class PartitionWrite:
    """One file to write: a dataset partition's candles (sorted by open time) from one Kafka partition."""

    key: PartitionKey
    file: FileName
    candles: tuple[ArchivedCandle, ...]


@dataclass(frozen=True)
class FlushPlan:
    writes: tuple[PartitionWrite, ...]
    commits: dict[int, int] = field(default_factory=dict)
    """Kafka partition -> the offset to commit (the next one to read) once every write is durable."""

    @property
    def candles(self) -> int:
        return sum(len(w.candles) for w in self.writes)


def flush_due(held: int, oldest_read_s: float | None, now_s: float, max_candles: int, interval_s: float) -> bool:
    """The flush policy: enough candles wait, or the oldest has waited long enough."""
    if held == 0 or oldest_read_s is None:
        return False
    return held >= max_candles or now_s - oldest_read_s >= interval_s


class ArchiveBuffer:
    """The candles read since the last flush, per Kafka partition of one topic."""

    def __init__(self, topic: str) -> None:
        self._topic = topic
        self._held: dict[int, dict[tuple[str, int], ArchivedCandle]] = {}
        self._first_offset: dict[int, int] = {}  # the first candle's offset per partition since the last flush
        self._next_offset: dict[int, int] = {}  # the read position: the offset after the last record read
        self._committed: dict[int, int] = {}
        self._oldest_read_s: float | None = None
        self._held_count = 0

    @property
    def held(self) -> int:
        """Candles waiting (after dedupe)."""
        return self._held_count

    @property
    def oldest_read_s(self) -> float | None:
        return self._oldest_read_s

    def add(self, partition: int, offset: int, candle: Candle, now_s: float) -> None:
        """A closed candle read at ``offset``: it replaces a held one of the same symbol and open time."""
        self._advance(partition, offset)
        held = self._held.setdefault(partition, {})
        key = (candle.symbol, candle.open_time)
        if key not in held:
            self._held_count += 1
        held[key] = ArchivedCandle(candle, partition, offset)
        self._first_offset.setdefault(partition, offset)
        if self._oldest_read_s is None:
            self._oldest_read_s = now_s

    def skip(self, partition: int, offset: int) -> None:
        """A record read and not archived (an in-progress update, an invalid message)."""
        self._advance(partition, offset)

    def _advance(self, partition: int, offset: int) -> None:
        if offset < self._next_offset.get(partition, 0):
            raise ValueError(f"partition {partition}: offset {offset} read after {self._next_offset[partition] - 1}")
        self._next_offset[partition] = offset + 1

    def plan(self, market: str) -> FlushPlan:
        """Every held candle grouped into files, and the commits that become safe once they are durable."""
        writes: list[PartitionWrite] = []
        for partition, held in sorted(self._held.items()):
            if not held:
                continue
            name = FileName(self._topic, partition, self._first_offset[partition], self._next_offset[partition] - 1)
            groups: dict[PartitionKey, list[ArchivedCandle]] = {}
            for archived in held.values():
                groups.setdefault(partition_key(market, archived.candle.symbol, archived.candle.open_time),
                                  []).append(archived)
            for key, candles in sorted(groups.items()):
                writes.append(PartitionWrite(key, name, tuple(sorted(candles, key=lambda a: a.candle.open_time))))
        commits = {p: n for p, n in self._next_offset.items() if self._committed.get(p) != n}
        return FlushPlan(tuple(writes), commits)

    def flushed(self, plan: FlushPlan) -> None:
        """The plan's files are durable: forget its candles (anything read since stays held)."""
        for partition, next_offset in plan.commits.items():
            held = self._held.get(partition, {})
            kept = {k: a for k, a in held.items() if a.offset >= next_offset}
            self._held_count -= len(held) - len(kept)
            self._held[partition] = kept
            if kept:
                self._first_offset[partition] = min(a.offset for a in kept.values())
            else:
                self._first_offset.pop(partition, None)
        if self._held_count == 0:
            self._oldest_read_s = None

    def committed(self, commits: dict[int, int]) -> None:
        self._committed.update(commits)

    def idle_commits(self) -> dict[int, int]:
        """Partitions that hold no candle and were read past their last commit: safe to commit now."""
        return {p: n for p, n in self._next_offset.items()
                if not self._held.get(p) and self._committed.get(p) != n}

    def safe_commit(self, partition: int) -> int | None:
        """The highest offset that may be committed on ``partition`` now (None: nothing read yet)."""
        held = self._held.get(partition)
        if held:
            return min(a.offset for a in held.values())
        return self._next_offset.get(partition)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions taken away in a rebalance: their candles are the new owner's to read again."""
        for partition in partitions:
            self._held_count -= len(self._held.pop(partition, {}))
            self._first_offset.pop(partition, None)
            self._next_offset.pop(partition, None)
            self._committed.pop(partition, None)
        if self._held_count == 0:
            self._oldest_read_s = None
