"""Where a candle goes in the dataset, and what its files are called.

A candle's partition is ``market=M/symbol=S/month=YYYY-MM`` (the UTC month of its open time). A file
is named after the Kafka records it was built from: ``TOPIC-PARTITION-FIRST-LAST.parquet``, the
topic, its partition and the first and last offsets read (zero-padded to 20 digits, so names sort by
offset). Writing the same offsets again gives the same name, so a replay after a crash rewrites the
file instead of adding a second one; a file merged with an older one of its folder takes the union of
their ranges. Temporary files start with a dot, which pyarrow's dataset discovery skips.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["PartitionKey", "FileName", "month_of", "partition_key", "merged_name"]

_FILE = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)-(?P<partition>\d+)-(?P<first>\d{20})-(?P<last>\d{20})\.parquet$")


def month_of(open_time_ms: int) -> str:
    """``YYYY-MM``, the UTC month of an open time."""
    return datetime.fromtimestamp(open_time_ms / 1000, tz=UTC).strftime("%Y-%m")


@dataclass(frozen=True, order=True)
class PartitionKey:
    market: str
    symbol: str
    month: str

    @property
    def directory(self) -> str:
        """The folder under the archive's root, hive style."""
        return f"market={self.market}/symbol={self.symbol}/month={self.month}"


def partition_key(market: str, symbol: str, open_time_ms: int) -> PartitionKey:
    return PartitionKey(market, symbol, month_of(open_time_ms))


@dataclass(frozen=True, order=True)
class FileName:
    topic: str
    partition: int
    first_offset: int
    last_offset: int

    def __post_init__(self) -> None:
        if not 0 <= self.first_offset <= self.last_offset:
            raise ValueError(f"offset range {self.first_offset}..{self.last_offset} is not in order")

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}-{self.first_offset:020d}-{self.last_offset:020d}.parquet"

    def temporary(self, token: str) -> str:
        """The name it is written under before the rename that makes it visible."""
        return f".{self.name}.{token}.tmp"

    @classmethod
    def parse(cls, name: str) -> FileName | None:
        """The file name's parts, or None for a file the archive did not name."""
        match = _FILE.match(name)
        if match is None:
            return None
        return cls(match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]))


def merged_name(new: FileName, existing: Iterable[FileName]) -> FileName:
    """The name of ``new`` merged with a folder's ``existing`` files: the union of the offset ranges of
    those from the same topic and partition (others, from a renamed or repartitioned topic, are merged
    in but say nothing about this partition's offsets)."""
    same = [f for f in existing if (f.topic, f.partition) == (new.topic, new.partition)]
    return FileName(new.topic, new.partition, min([new.first_offset, *(f.first_offset for f in same)]),
                    max([new.last_offset, *(f.last_offset for f in same)]))
