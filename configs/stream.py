"""The worker's stream: which candle messages it lets in, the window it keeps per symbol, how it batches,
serves an ensemble, and meets a failing Redis or broker."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from configs.base import FrozenBlock

__all__ = ["MAX_INPUT_LOOKBACK", "CandleRules", "WindowConfig", "EnsembleServingConfig", "FaultConfig",
           "WorkerConfig"]

MAX_INPUT_LOOKBACK = 192
"""Rows of history the longest model input reads, the current candle included (the ``sequence`` input:
``max(bse_predict.features.inputs.INPUT_LOOKBACK.values())``, which a unit test holds it to; settings
import nothing of the project). A window must keep more: the extra one anchors a gap at its start."""


class CandleRules(FrozenBlock):
    """What a candle message must be to be let in (docs/candles.md). The plausibility bounds sit far outside
    every candle of ``../shared/data``: the measured extremes are beside the defaults in ``default.yaml``.
    A bound set to ``.inf`` in YAML is off."""

    symbol_pattern: str = r"^[A-Z0-9]{2,20}$"
    max_message_bytes: int = Field(4096, gt=0)
    dead_letter_keep_bytes: int = Field(4096, gt=0, description="a dead letter keeps this much of the original")
    symbols: tuple[str, ...] = Field((), description="only these symbols are served (empty: any that matches the pattern)")
    max_future_ms: int = Field(7_200_000, ge=0)
    min_open_time_ms: int = 1_230_768_000_000
    max_clock_skew_ms: int = Field(5_000, ge=0, description="a closed candle may end (open_time + timeframe) at "
                                                             "most this far ahead of the worker's clock")
    min_price: float = Field(1e-10, gt=0, description="no price (low) under this")
    max_price: float = Field(1e10, gt=0, description="no price (high) over this")
    max_volume: float = Field(1e15, gt=0, description="no volume over this")
    max_high_low_ratio: float = Field(20.0, gt=1, description="high / low of one candle at most this")
    max_close_jump_ratio: float = Field(10.0, gt=1, description="close / the symbol's last close (or its "
                                                                "inverse) at most this")

    @model_validator(mode="after")
    def _price_bounds_ordered(self) -> CandleRules:
        if self.min_price >= self.max_price:
            raise ValueError("candles.min_price must be below candles.max_price")
        return self


class WindowConfig(FrozenBlock):
    retain_candles: int = Field(400, gt=1, description="closed candles kept per symbol; above MAX_INPUT_LOOKBACK")
    silent_expire_hours: int = Field(
        720, gt=0, description="a symbol's Redis keys (window, marks, pending outcomes) expire this long after its "
                               "last candle; it is then rebuilt from the candles topic if it comes back")
    rebuild_scan_messages: int = Field(200_000, ge=0)

    @field_validator("retain_candles")
    @classmethod
    def _longer_than_every_input(cls, value: int) -> int:
        if value <= MAX_INPUT_LOOKBACK:
            raise ValueError(f"window.retain_candles is {value}: it must be above {MAX_INPUT_LOOKBACK}, the history "
                             "the longest model input reads, to keep the anchor candle too; with fewer every candle "
                             "counts as insufficient history and nothing is predicted")
        return value


class EnsembleServingConfig(FrozenBlock):
    """How the worker runs an ensemble version (docs/models/ensembles.md): ``members`` (measured
    faster, the default) runs each member's own file side by side on ``threads`` threads,
    drops a member that has not answered within ``member_timeout_ms`` (the rows are ``degraded``)
    and, with ``adaptive``, combines with weights re-fitted from the live outcomes; ``graph`` runs
    the one ONNX graph per target (no timeouts, fixed weights)."""

    mode: Literal["graph", "members"] = "members"
    member_timeout_ms: float = Field(200.0, gt=0)
    threads: int = Field(2, gt=0)
    adaptive: bool = False
    members_retain_hours: int = Field(
        168, gt=0, description="adaptive: a day's member probabilities expire this long after their last write "
                               "(those of predictions that never settle, e.g. a symbol that stopped)")

    @model_validator(mode="after")
    def _adaptive_needs_members(self) -> EnsembleServingConfig:
        if self.adaptive and self.mode != "members":
            raise ValueError("worker.ensemble.adaptive needs mode: members (one graph has fixed weights)")
        return self


class FaultConfig(FrozenBlock):
    """How the worker meets a failing Redis or broker: the same batch is retried in place with
    exponential backoff; past ``deadline_s`` the process exits non-zero without committing it, for its
    supervisor to restart from the last committed offset (docs/reliability.md)."""

    retry_initial_s: float = Field(0.2, gt=0)
    retry_max_s: float = Field(5.0, gt=0)
    deadline_s: float = Field(300.0, gt=0)
    stop_grace_s: float = Field(15.0, gt=0, description="on SIGTERM, how long a batch in hand may take to finish")
    redis_socket_timeout_s: float = Field(5.0, gt=0, description="a Redis reply later than this is a fault")
    redis_connect_timeout_s: float = Field(2.0, gt=0)
    redis_health_check_s: float = Field(10.0, gt=0, description="a connection idle this long is PINGed before use")
    kafka_request_timeout_ms: int = Field(30_000, gt=0, description="a produce not acknowledged by then is a fault")
    attempt_timeout_s: float = Field(90.0, gt=0, description="an attempt at a batch still running after this is "
                                                            "a fault (cancelled and retried)")
    stall_s: float = Field(120.0, gt=0, description="no batch finished for this long while records wait past the "
                                                    "committed offsets: the consumer stalled, the process exits 75")
    inject_failure_probability: float = Field(
        0.0, ge=0.0, lt=1.0, description="test hook of the chaos suite: each processing stage raises with this chance")

    @model_validator(mode="after")
    def _backoff_in_order(self) -> FaultConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("worker.faults.retry_max_s must be at least retry_initial_s")
        return self


class WorkerConfig(FrozenBlock):
    app_id: str = "bse-predict"
    batch_max_events: int = Field(256, gt=0)
    batch_within_ms: float = Field(2, gt=0)
    inference_threads: int = Field(1, gt=0)
    session_timeout_s: float = Field(10.0, gt=0)
    rebuild_from_files: tuple[Path, ...] = ()
    ensemble: EnsembleServingConfig = EnsembleServingConfig()
    faults: FaultConfig = FaultConfig()
    max_symbols: int = Field(5000, gt=0, description="at most this many different symbols are served fleet-wide; "
                                                     "candles of others are dead letters (symbol_cap)")

