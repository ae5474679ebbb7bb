"""The incremental outcome resolver (bse_predict/monitoring/outcomes.py) equals the offline labels.

For every real candle of a gap-filled history, feeding the candles that follow
it one at a time must settle it exactly as ``label_matrix`` labels it, with
``UNKNOWN`` rows left pending; hypothesis draws paths with gaps, ambiguous
candles and small horizons, and real futures candles (with holes punched in)
check the same on data.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bse_predict.candles.files import CandleSeries
from bse_predict.candles.grid import fill_gaps
from bse_predict.labels.first_touch import DOWN, NONE, UNKNOWN, UP, label_matrix
from bse_predict.monitoring.outcomes import (PendingBook, PendingOutcome, pending_from_prediction, settle_books, settle_in_order,
                                             settle_on_candle, to_outcome)
from bse_predict.candles.schema import ModelRef, Prediction, TargetPrediction

HOUR_MS = 3_600_000
MODEL = ModelRef(name="random_forest", version="v1")


def _pending(open_time: int, close: float, frac: float, horizon: int, target: str = "x") -> PendingOutcome:
    return PendingOutcome(
        prediction_id=f"S|1h|{open_time}", symbol="S", timeframe="1h", open_time=open_time, entry_close=close,
        target=target, target_frac=frac, horizon_candles=horizon, step_ms=HOUR_MS, model=MODEL, variant="control",
        stream="live", p_up=0.3, p_down=0.3, p_none=0.4,
    )


def _live_labels(times: np.ndarray, ohlcv: np.ndarray, frac: float, horizon: int) -> dict[int, tuple[int, int]]:
    """Settle a prediction on every real candle by feeding the real candles in order (gaps simply absent)."""
    pending = [_pending(int(t), float(row[3]), frac, horizon) for t, row in zip(times, ohlcv, strict=True)]
    settled = settle_in_order(pending, zip(times.tolist(), ohlcv, strict=True))
    return {s.pending.open_time: (s.label, s.resolved_at) for s in settled}


def _assert_equal_to_offline(times: np.ndarray, ohlcv: np.ndarray, frac: float, horizon: int) -> dict[str, int]:
    grid = fill_gaps(times, ohlcv, HOUR_MS)
    offline = label_matrix(grid.ohlcv, grid.is_real, frac, horizon)
    live = _live_labels(times, ohlcv, frac, horizon)
    counts = {"settled": 0, "pending": 0}
    for t, label, real in zip(grid.open_time_ms.tolist(), offline.tolist(), grid.is_real.tolist(), strict=True):
        if not real:
            assert t not in live
            continue
        if label == UNKNOWN:
            assert t not in live, f"{t}: offline UNKNOWN but settled live as {live[t]}"
            counts["pending"] += 1
            continue
        assert t in live, f"{t}: offline {label} but still pending live"
        assert live[t][0] == label, f"{t}: live {live[t][0]} != offline {label}"
        counts["settled"] += 1
    return counts


# --- hand-computed cases -------------------------------------------------------


def test_a_touch_settles_at_the_touching_candles_close() -> None:
    item = _pending(0, 100.0, 0.02, 3)
    assert settle_on_candle([item], 0, np.array([100, 103, 99, 100, 1.0])) == []  # the prediction candle itself
    assert settle_on_candle([item], HOUR_MS, np.array([100, 101, 99, 100, 1.0])) == []
    (hit,) = settle_on_candle([item], 2 * HOUR_MS, np.array([100, 102.0, 99, 101, 1.0]))
    assert (hit.label, hit.resolved_at) == (UP, 3 * HOUR_MS)


def test_an_ambiguous_candle_follows_the_label_tie_rule() -> None:
    item = _pending(0, 100.0, 0.02, 3)
    (near_down,) = settle_on_candle([item], HOUR_MS, np.array([99.0, 103, 97, 100, 1.0]))
    assert near_down.label == DOWN
    (near_up,) = settle_on_candle([item], HOUR_MS, np.array([101.5, 103, 97, 100, 1.0]))
    assert near_up.label == UP
    (tie,) = settle_on_candle([item], HOUR_MS, np.array([100.0, 103, 97, 100, 1.0]))
    assert tie.label == DOWN


def test_the_horizon_end_and_a_gap_over_it_settle_none_at_the_horizon_end() -> None:
    item = _pending(0, 100.0, 0.02, 3)
    quiet = np.array([100, 101, 99, 100, 1.0])
    (at_end,) = settle_on_candle([item], 3 * HOUR_MS, quiet)
    assert (at_end.label, at_end.resolved_at) == (NONE, 4 * HOUR_MS)
    (past_gap,) = settle_on_candle([item], 9 * HOUR_MS, np.array([100, 150, 50, 100, 1.0]))
    assert (past_gap.label, past_gap.resolved_at) == (NONE, 4 * HOUR_MS)


def test_outcome_message_carries_the_prediction() -> None:
    part = TargetPrediction(p_up=0.5, p_down=0.3, p_none=0.2, direction="up", confidence=0.625, signal="LONG")
    prediction = Prediction(id="S|1h|0", symbol="S", timeframe="1h", open_time=0, close=100.0, horizon_hours=3,
                            targets={"2%": part, "7%": part}, model=MODEL, variant="B", latency_ms=1.0)
    (item,) = pending_from_prediction(prediction, {"2%": 0.02}, 3, HOUR_MS, "shadow")
    (settled,) = settle_on_candle([item], HOUR_MS, np.array([100, 102, 99.5, 101, 1.0]))
    outcome = to_outcome(settled)
    assert (outcome.id, outcome.target, outcome.outcome, outcome.resolved_at) == ("S|1h|0", "2%", "up", 2 * HOUR_MS)
    assert (outcome.variant, outcome.stream, outcome.p_up, outcome.model) == ("B", "shadow", 0.5, MODEL)


# --- properties ----------------------------------------------------------------


@st.composite
def paths_with_gaps(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 40))
    steps = draw(st.lists(st.sampled_from([-0.03, -0.015, -0.005, 0.0, 0.005, 0.015, 0.03]), min_size=n, max_size=n))
    wicks = draw(st.lists(st.tuples(st.sampled_from([0.0, 0.004, 0.012, 0.025]), st.sampled_from([0.0, 0.004, 0.012, 0.025])),
                          min_size=n, max_size=n))
    keep = draw(st.lists(st.integers(0, 4).map(lambda v: v != 0), min_size=n, max_size=n))  # ~20% gaps
    keep[0] = True
    close = 100.0 * np.cumprod(1.0 + np.array(steps))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.array([w[0] for w in wicks]))
    low = np.minimum(open_, close) * (1 - np.array([w[1] for w in wicks]))
    ohlcv = np.column_stack([open_, high, low, close, np.ones(n)])
    rows = np.flatnonzero(keep)
    return (rows * HOUR_MS).astype(np.int64), ohlcv[rows]


@settings(max_examples=300, deadline=None)
@given(paths_with_gaps(), st.sampled_from([0.01, 0.02, 0.05]), st.integers(1, 8))
@pytest.mark.slow
def test_live_settlement_equals_offline_labels_on_any_path_with_gaps(
    path: tuple[np.ndarray, np.ndarray], frac: float, horizon: int
) -> None:
    times, ohlcv = path
    _assert_equal_to_offline(times, ohlcv, frac, horizon)


@settings(max_examples=100, deadline=None)
@given(paths_with_gaps(), st.integers(1, 6))
def test_duplicate_candles_do_not_change_the_answer(path: tuple[np.ndarray, np.ndarray], horizon: int) -> None:
    times, ohlcv = path
    pending = [_pending(int(t), float(r[3]), 0.02, horizon) for t, r in zip(times, ohlcv, strict=True)]
    once = settle_in_order(pending, zip(times.tolist(), ohlcv, strict=True))
    doubled = [(t, r) for t, r in zip(times.tolist(), ohlcv, strict=True) for _ in range(2)]
    twice = settle_in_order(pending, doubled)
    key = lambda s: (s.pending.key, s.label, s.resolved_at)  # noqa: E731
    assert sorted(map(key, once)) == sorted(map(key, twice))


@settings(max_examples=60, deadline=None)
@given(st.lists(paths_with_gaps(), min_size=1, max_size=5), st.integers(1, 6), st.integers(1, 7))
def test_many_symbols_settled_together_in_batches_equal_the_offline_labels(
    paths: list[tuple[np.ndarray, np.ndarray]], horizon: int, batch_candles: int
) -> None:
    """The worker's way: every symbol's book fed its next few candles at once (:func:`settle_books`),
    settled rows removed, batch after batch; each symbol must end as its offline labels say, and the
    settlements come book by book, candle by candle."""
    books = [PendingBook(_pending(int(t), float(r[3]), frac, horizon, target=f"{frac}").model_copy(
                             update={"symbol": f"S{b}", "prediction_id": f"S{b}|1h|{t}"})
                         for t, r in zip(times, ohlcv, strict=True) for frac in (0.01, 0.02, 0.05))
             for b, (times, ohlcv) in enumerate(paths)]
    live: list[dict[tuple[int, str], tuple[int, int]]] = [{} for _ in paths]
    longest = max(len(times) for times, _ in paths)
    for start in range(0, longest, batch_candles):
        fed = [(book, list(zip(times[start:start + batch_candles].tolist(), ohlcv[start:start + batch_candles],
                               strict=True))) for book, (times, ohlcv) in zip(books, paths, strict=True)]
        settled = settle_books(fed)
        owners = [int(s.pending.symbol[1:]) for s in settled]
        assert owners == sorted(owners)  # book by book
        for s, b in zip(settled, owners, strict=True):
            live[b][(s.pending.open_time, s.pending.target)] = (s.label, s.resolved_at)
            books[b].remove([s.pending.key])
    for (times, ohlcv), found in zip(paths, live, strict=True):
        for frac in (0.01, 0.02, 0.05):
            expected = _live_labels(times, ohlcv, frac, horizon)
            assert {t: v for (t, target), v in found.items() if target == f"{frac}"} == expected


# --- real candles ----------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BTCUSDT", "SOLUSDT"])
def test_live_settlement_equals_offline_labels_on_real_candles_with_holes(
    futures_series: dict[str, CandleSeries], symbol: str
) -> None:
    series = futures_series[symbol].tail(1200)
    rng = np.random.default_rng(5)
    keep = rng.random(len(series.open_time_ms)) > 0.03
    keep[0] = True
    times, ohlcv = series.open_time_ms[keep], series.ohlcv[keep]
    for frac in (0.01, 0.02, 0.05):
        counts = _assert_equal_to_offline(times, ohlcv, frac, 72)
        assert counts["settled"] > 1000 and counts["pending"] > 0
