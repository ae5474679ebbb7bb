"""Live outcomes: a published prediction settled by the candles that follow it.

The answer is the offline label of :mod:`bse_predict.labels.first_touch`, computed incrementally:
a pending prediction sees the symbol's closed candles one at a time, and each
candle is tested with :func:`bse_predict.labels.first_touch.first_touch` itself (a batch of
one-candle futures), so the barriers, the ``>=``/``<=`` comparisons and the tie
rule are the trainer's, not a copy of them.

For a prediction on the candle opening at ``t0`` and a candle opening at
``t = t0 + k * step``:

- ``k < 1``: the candle is not after the prediction; ignored.
- ``1 <= k <= H``: a touch settles it (``up``/``down``), known at that candle's
  close (``t + step``). An untouched ``k == H`` candle ends the horizon: ``none``.
- ``k > H``: the horizon ended before this candle without a touch: ``none``.

Gaps follow :mod:`bse_predict.candles.grid`: a missing slot is a flat candle at the previous
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

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from bse_predict.labels.first_touch import CLASS_NAMES, DOWN, NONE, UP, first_touch
from bse_predict.candles.schema import ModelRef, Outcome, Prediction

__all__ = [
    "Stream",
    "PendingOutcome",
    "Settlement",
    "pending_from_prediction",
    "settle_on_candle",
    "settle_in_order",
    "PendingBook",
    "Candles",
    "settle_books",
    "to_outcome",
]

_HIGH, _LOW = 1, 2  # columns of an ohlcv row

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
    degraded: bool = False

    @cached_property
    def key(self) -> str:
        """Unique per prediction, target, model version, arm and stream: the dedupe key."""
        return f"{self.open_time}|{self.target}|{self.model.name}|{self.model.version}|{self.variant}|{self.stream}"

    @property
    def horizon_end_ms(self) -> int:
        """The close of the last candle of the horizon."""
        return self.open_time + (self.horizon_candles + 1) * self.step_ms


@dataclass(frozen=True, slots=True)
class Settlement:
    """A pending prediction and its answer (UP, DOWN or NONE of :mod:`bse_predict.labels.first_touch`).

    In-process only (never sent or stored) and built hundreds of times a batch from checked values:
    a plain dataclass, not a message model."""

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
            p_up=part.p_up, p_down=part.p_down, p_none=part.p_none, degraded=prediction.degraded,
        )
        for target, part in prediction.targets.items()
        if target in target_fracs
    ]


def settle_on_candle(
    pending: Sequence[PendingOutcome], open_time_ms: int, ohlcv: Sequence[float] | np.ndarray
) -> list[Settlement]:
    """The pending predictions that the closed candle (``open_time_ms``, ``ohlcv`` float[5]) settles."""
    return settle_in_order(pending, [(open_time_ms, ohlcv)])


def settle_in_order(
    pending: Iterable[PendingOutcome], candles: Iterable[tuple[int, Sequence[float] | np.ndarray]]
) -> list[Settlement]:
    """Feed one symbol's closed candles (open_time_ms, ohlcv float[5]) in order; each prediction settles
    at most once, at the first candle that answers it."""
    return PendingBook(pending).settle_in_order(candles)


class PendingBook:
    """One symbol's pending outcomes, with their numbers kept as arrays in step with additions and removals,
    so settling a candle is a few array operations whatever the number pending (one :func:`first_touch`
    call per target)."""

    def __init__(self, items: Iterable[PendingOutcome] = ()) -> None:
        self._items: dict[str, PendingOutcome] = {}
        self._keys: list[str] = []
        self._ints = np.empty((0, 3), dtype=np.int64)  # open_time, step_ms, horizon_candles
        self._floats = np.empty((0, 2), dtype=np.float64)  # target_frac, entry_close
        self.add(items)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[PendingOutcome]:
        return iter([self._items[key] for key in self._keys])

    def add(self, items: Iterable[PendingOutcome]) -> None:
        new = [item for item in items if item.key not in self._items]
        new = list({item.key: item for item in new}.values())
        if not new:
            return
        self._items.update((item.key, item) for item in new)
        self._keys += [item.key for item in new]
        self._ints = np.concatenate([self._ints, np.array([(i.open_time, i.step_ms, i.horizon_candles) for i in new],
                                                          dtype=np.int64)])
        self._floats = np.concatenate([self._floats, np.array([(i.target_frac, i.entry_close) for i in new])])

    def remove(self, keys: Iterable[str]) -> None:
        gone = {key for key in keys if key in self._items}
        if not gone:
            return
        keep = np.array([key not in gone for key in self._keys], dtype=bool)
        for key in gone:
            del self._items[key]
        self._keys = [key for key, kept in zip(self._keys, keep, strict=True) if kept]
        self._ints, self._floats = self._ints[keep], self._floats[keep]

    def settle_in_order(self, candles: Iterable[tuple[int, Sequence[float] | np.ndarray]]) -> list[Settlement]:
        """The settlements the candles give, in order (see :func:`settle_in_order`); the book is not changed."""
        return settle_books([(self, list(candles))])

    def item_at(self, index: int) -> PendingOutcome:
        return self._items[self._keys[index]]


Candles = Sequence[tuple[int, Sequence[float] | np.ndarray]]
"""One symbol's closed candles in open-time order: (open_time_ms, ohlcv float[5])."""


def settle_books(books: Sequence[tuple[PendingBook, Candles]]) -> list[Settlement]:
    """Each book (one symbol's pending outcomes) fed its own candles in order: the settlements of
    :meth:`PendingBook.settle_in_order` book by book, in that order, but with every array operation done
    once for all the books (a batch settles a hundred symbols at the cost of a few)."""
    fed = [(book, candles) for book, candles in books if len(book) and candles]
    if not fed:
        return []
    owner = np.repeat(np.arange(len(fed)), [len(book) for book, _ in fed])
    ints = np.concatenate([book._ints for book, _ in fed])  # noqa: SLF001 (the books' own arrays)
    floats = np.concatenate([book._floats for book, _ in fed])  # noqa: SLF001
    opened, steps, horizons = ints[:, 0], ints[:, 1], ints[:, 2]
    fracs, entry = floats[:, 0], floats[:, 1]
    depth = max(len(candles) for _, candles in fed)
    times = np.zeros((len(fed), depth), dtype=np.int64)
    bars = np.zeros((len(fed), depth, 5), dtype=np.float64)
    present = np.zeros((len(fed), depth), dtype=bool)
    for b, (_, candles) in enumerate(fed):
        for j, (open_time_ms, ohlcv) in enumerate(candles):
            times[b, j], bars[b, j], present[b, j] = open_time_ms, ohlcv, True
    label = np.full(len(owner), -1, dtype=np.int64)
    at = np.full(len(owner), -1, dtype=np.int64)  # the candle (of its book) that settled the row
    for j in range(depth):
        waiting = (label < 0) & present[owner, j]
        if not waiting.any():
            continue
        found = _labels_on(times[owner, j], bars[owner, j], waiting, opened, steps, horizons, fracs, entry)
        label = np.where(found >= 0, found, label)
        at = np.where(found >= 0, j, at)
    rows = np.flatnonzero(label >= 0)
    rows = rows[np.lexsort((rows, at[rows], owner[rows]))]  # book by book, candle by candle, row by row
    starts = np.concatenate(([0], np.cumsum([len(book) for book, _ in fed])))
    settled = []
    for row, b, j, answer in zip(rows.tolist(), owner[rows].tolist(), at[rows].tolist(), label[rows].tolist(),
                                 strict=True):
        item = fed[b][0].item_at(row - int(starts[b]))
        settled.append(Settlement(pending=item, label=answer,
                                  resolved_at=int(times[b, j]) + item.step_ms if answer != NONE else item.horizon_end_ms))
    return settled


def _labels_on(open_time: np.ndarray, bars: np.ndarray, waiting: np.ndarray, opened: np.ndarray, steps: np.ndarray,
               horizons: np.ndarray, fracs: np.ndarray, entry: np.ndarray) -> np.ndarray:
    """Per row, what its candle (``open_time`` int[n], ``bars`` float[n, 5]) answers: UP, DOWN, NONE or -1."""
    k = (open_time - opened) // steps
    labels = np.full(len(k), -1, dtype=np.int64)
    labels[waiting & (k > horizons)] = NONE
    inside = waiting & (k >= 1) & (k <= horizons)
    labels[inside & (k == horizons)] = NONE  # unless the candle touches (below)
    # Only rows whose barrier the candle reaches can be touched; first_touch decides which barrier.
    reached = inside & ((bars[:, _HIGH] >= entry * (1.0 + fracs)) | (bars[:, _LOW] <= entry * (1.0 - fracs)))
    for target_frac in np.unique(fracs[reached]):
        rows = np.flatnonzero(reached & (fracs == target_frac))
        touched = first_touch(entry[rows], bars[rows].reshape(len(rows), 1, 5), np.ones((len(rows), 1), dtype=bool),
                              float(target_frac)).astype(np.int64)
        labels[rows] = np.where((touched == UP) | (touched == DOWN), touched, labels[rows])
    return labels


def to_outcome(settlement: Settlement) -> Outcome:
    """The contract's ``outcomes`` message for one settlement."""
    item = settlement.pending
    return Outcome(
        id=item.prediction_id, symbol=item.symbol, open_time=item.open_time, target=item.target,
        outcome=CLASS_NAMES[settlement.label], resolved_at=settlement.resolved_at, model=item.model,
        variant=item.variant, p_up=item.p_up, p_down=item.p_down, p_none=item.p_none, stream=item.stream,
    )
