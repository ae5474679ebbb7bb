"""``bse-predict archive``: closed candles from ``candles`` into a Parquet dataset (docs/archive.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from configs.base import FrozenBlock

__all__ = ["ArchiveConfig"]


class ArchiveConfig(FrozenBlock):
    """Where the archive's candles come from, how they are laid out and when they are written.

    A flush writes every buffered candle (each symbol-month's file merged with what it held), makes
    the files durable and only then commits the offsets: it happens when ``flush_max_candles`` closed
    candles wait, or ``flush_interval_s`` after the oldest of them was read, or when the command stops."""

    market: str = Field("futures", pattern=r"^[A-Za-z0-9_-]{1,32}$",
                        description="the `market=` partition of every candle written (spot, futures, ...)")
    group_id: str = Field("bse-predict-archive", min_length=1, description="the consumer group (topic prefix added)")
    start_from: Literal["earliest", "latest"] = "earliest"
    flush_max_candles: int = Field(50_000, gt=0)
    flush_interval_s: float = Field(300.0, gt=0)
    poll_timeout_ms: int = Field(1000, gt=0)
    max_poll_records: int = Field(5000, gt=0)
    session_timeout_s: float = Field(30.0, ge=6.0)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    retry_initial_s: float = Field(0.5, gt=0, description="a failed write is retried after this, doubling ...")
    retry_max_s: float = Field(30.0, gt=0, description="... up to this between tries")
    write_deadline_s: float = Field(300.0, gt=0, description="still failing after this long: exit 75, uncommitted")
    exit_after_durable_writes: int = Field(
        0, ge=0, description="test hook: exit at once (code 70) after this many flushes are durable, before their "
                             "commit; 0 is off")

    @model_validator(mode="after")
    def _backoff_in_order(self) -> ArchiveConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("archive.retry_max_s must be at least retry_initial_s")
        return self
