"""Live outcomes: a published prediction settled by the candles that follow it.

The answer is the offline label of :mod:`models.labels`, computed incrementally:
a pending prediction sees the symbol's closed candles one at a time, and each
candle is tested with :func:`models.labels.first_touch` itself (a batch of
one-candle futures), so the barriers, the ``>=``/``<=`` comparisons and the tie
rule are the trainer's, not a copy of them.

For a prediction on the candle opening at ``t0`` and a candle opening at
``t = t0 + k * step``:

- ``k < 1``: the candle is not after the prediction; ignored.
- ``1 <= k <= H``: a touch settles it (``up``/``down``), known at that candle's
  close (``t + step``). An untouched ``k == H`` candle ends the horizon: ``none``.
- ``k > H``: the horizon ended before this candle without a touch: ``none``.

Gaps follow :mod:`models.grid`: a missing slot is a flat candle at the previous
close, which can never touch (its price lies strictly inside the band unless an
earlier candle touched, and then the prediction is settled already), so a gap
only counts towards the horizon. ``none`` is therefore known at the horizon's
end, ``t0 + (H + 1) * step``, whichever candle reveals it. ``resolved_at`` is
that deterministic time, never the wall clock, so a replay produces the same
outcome byte for byte.

Candles must arrive in open-time order for the result to equal the offline
label; a touch or a horizon end is final once seen (a candle arriving later
than a newer one that already settled the prediction cannot change it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from models.labels import CLASS_NAMES, DOWN, NONE, UP, first_touch
from models.schema import ModelRef, Outcome, Prediction

__all__ = [
    "Stream",
    "PendingOutcome",
    "Settlement",
    "pending_from_prediction",
    "settle_on_candle",
    "settle_in_order",
    "to_outcome",
]

Stream = Literal["live", "shadow"]
"""Which topic carried the prediction: ``predictions`` or ``predictions.shadow``."""


class PendingOutcome(BaseModel):
    """One prediction for one target, waiting for its answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prediction_id: str
    symbol: str
    timeframe: str
    open_time: int
    entry_close: float
    target: str
    target_frac: float
    horizon_candles: int
    step_ms: int
    model: ModelRef
    variant: str
    stream: Stream
    p_up: float
    p_down: float
    p_none: float

    @property
    def key(self) -> str:
        """Unique per prediction, target, model version, arm and stream: the dedupe key."""
        return f"{self.open_time}|{self.target}|{self.model.name}|{self.model.version}|{self.variant}|{self.stream}"

    @property
    def horizon_end_ms(self) -> int:
        """The close of the last candle of the horizon."""
        return self.open_time + (self.horizon_candles + 1) * self.step_ms


class Settlement(BaseModel):
    """A pending prediction and its answer (UP, DOWN or NONE of :mod:`models.labels`)."""

    model_config = ConfigDict(frozen=True)

    pending: PendingOutcome
    label: int
    resolved_at: int


def pending_from_prediction(
    prediction: Prediction, target_fracs: dict[str, float], horizon_candles: int, step_ms: int, stream: Stream
) -> list[PendingOutcome]:
    """One pending outcome per target of ``prediction`` that ``target_fracs`` knows ("2%": 0.02)."""
    return [
        PendingOutcome(
            prediction_id=prediction.id, symbol=prediction.symbol, timeframe=prediction.timeframe,
            open_time=prediction.open_time, entry_close=prediction.close, target=target,
            target_frac=target_fracs[target], horizon_candles=horizon_candles, step_ms=step_ms,
            model=prediction.model, variant=prediction.variant, stream=stream,
            p_up=part.p_up, p_down=part.p_down, p_none=part.p_none,
        )
        for target, part in prediction.targets.items()
        if target in target_fracs
    ]


def settle_on_candle(pending: Sequence[PendingOutcome], open_time_ms: int, ohlcv: np.ndarray) -> list[Settlement]:
    """The pending predictions that the closed candle (``open_time_ms``, ``ohlcv`` float[5]) settles."""
    row = np.asarray(ohlcv, dtype=np.float64).reshape(1, 1, 5)
    settled: list[Settlement] = []
    in_horizon: dict[float, list[PendingOutcome]] = defaultdict(list)
    for item in pending:
        k = (open_time_ms - item.open_time) // item.step_ms
        if k < 1:
            continue
        if k > item.horizon_candles:
            settled.append(Settlement(pending=item, label=NONE, resolved_at=item.horizon_end_ms))
        else:
            in_horizon[item.target_frac].append(item)
    for target_frac, items in in_horizon.items():
        entry = np.array([item.entry_close for item in items], dtype=np.float64)
        future = np.broadcast_to(row, (len(items), 1, 5))
        touched = first_touch(entry, future, np.ones((len(items), 1), dtype=bool), target_frac)
        for item, label in zip(items, touched, strict=True):
            if label in (UP, DOWN):
                settled.append(Settlement(pending=item, label=int(label), resolved_at=open_time_ms + item.step_ms))
            elif (open_time_ms - item.open_time) // item.step_ms == item.horizon_candles:
                settled.append(Settlement(pending=item, label=NONE, resolved_at=item.horizon_end_ms))
    return settled


def settle_in_order(
    pending: Iterable[PendingOutcome], candles: Iterable[tuple[int, np.ndarray]]
) -> list[Settlement]:
    """Feed closed candles (open_time_ms, ohlcv) in order; each prediction settles at most once."""
    waiting = {item.key: item for item in pending}
    settled: list[Settlement] = []
    for open_time_ms, ohlcv in candles:
        for settlement in settle_on_candle(list(waiting.values()), open_time_ms, ohlcv):
            settled.append(settlement)
            del waiting[settlement.pending.key]
    return settled


def to_outcome(settlement: Settlement) -> Outcome:
    """The contract's ``outcomes`` message for one settlement."""
    item = settlement.pending
    return Outcome(
        id=item.prediction_id, symbol=item.symbol, open_time=item.open_time, target=item.target,
        outcome=CLASS_NAMES[settlement.label], resolved_at=settlement.resolved_at, model=item.model,
        variant=item.variant, p_up=item.p_up, p_down=item.p_down, p_none=item.p_none, stream=item.stream,
    )
