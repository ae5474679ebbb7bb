"""Tests of the feature definitions (bse_predict/features/definitions.py).

The worker (batches of windows) and the trainer (whole histories) must agree,
so the two drivers are compared on real Binance candles, including a stretch
with a real 30-hour exchange outage. Further: no look-ahead (truncating or
perturbing the future leaves a row unchanged), finiteness over gaps and flat
candles, no duplicate columns, scale invariance, and hand-computed values on
tiny synthetic windows.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from bse_predict.features.definitions import (
    FEATURE_NAMES,
    FEATURE_SPEC_HASH,
    LOOKBACK_CANDLES,
    compute_features,
    feature_matrix,
)
from bse_predict.candles.grid import GridCandles, fill_gaps

L = LOOKBACK_CANDLES
F = len(FEATURE_NAMES)
HOUR_MS = 3_600_000
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "candles"
TOL = {"rtol": 1e-9, "atol": 1e-12}


def load_grid(market: str, symbol: str) -> GridCandles:
    path = DATA / market / f"{symbol}-1h.csv.gz"
    if not path.exists():
        pytest.fail(f"real candles not found (the repo expects ../shared beside it) at {path}")
    raw = np.loadtxt(path, delimiter=",", skiprows=1)
    return fill_gaps(raw[:, 0].astype(np.int64), raw[:, 1:], HOUR_MS)


def grid_slice(grid: GridCandles, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    return grid.open_time_ms[start:stop], np.array(grid.ohlcv[start:stop])


@pytest.fixture(scope="module")
def futures() -> tuple[np.ndarray, np.ndarray]:
    """3,000 gap-free hours of BTCUSDT futures (2022)."""
    return grid_slice(load_grid("binance-futures", "BTCUSDT"), 20_000, 23_000)


@pytest.fixture(scope="module")
def spot_grid() -> GridCandles:
    """All of BTCUSDT spot, with its real outages filled flat."""
    return load_grid("binance-spot", "BTCUSDT")


@pytest.fixture(scope="module")
def gapped(spot_grid: GridCandles) -> tuple[np.ndarray, np.ndarray, slice, np.ndarray]:
    """3,000 hours of BTCUSDT spot around the ~30 h outage of 2023-12-30: times, ohlcv, the hole, is_real."""
    fake = np.flatnonzero(~spot_grid.is_real)
    runs = np.split(fake, np.flatnonzero(np.diff(fake) > 1) + 1)
    hole = max(runs, key=len)
    assert hole.size >= 29
    start = int(hole[0]) - 1_500
    times, ohlcv = grid_slice(spot_grid, start, start + 3_000)
    where = slice(int(hole[0]) - start, int(hole[-1]) + 1 - start)
    return times, ohlcv, where, spot_grid.is_real[start : start + 3_000]


def windows_at(ohlcv: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The windows ending at each row, as contiguous copies (the worker's layout)."""
    return np.stack([ohlcv[t - L + 1 : t + 1] for t in rows])


def column(name: str) -> int:
    return FEATURE_NAMES.index(name)


# --- definitions ---------------------------------------------------------------


def test_names_and_constants() -> None:
    assert len(set(FEATURE_NAMES)) == F
    assert 70 <= F <= 100
    assert all(re.fullmatch(r"[a-z0-9_]+", name) for name in FEATURE_NAMES)
    assert 169 <= L <= 256
    assert re.fullmatch(r"[0-9a-f]{64}", FEATURE_SPEC_HASH)


@pytest.mark.slow
def test_matrix_width_and_warm_up_rows(futures: tuple[np.ndarray, np.ndarray]) -> None:
    times, ohlcv = futures
    matrix = feature_matrix(times[: L + 10], ohlcv[: L + 10])
    assert matrix.shape == (L + 10, F) and matrix.dtype == np.float64
    assert np.isnan(matrix[: L - 1]).all()
    assert np.isfinite(matrix[L - 1 :]).all()
    assert np.isnan(feature_matrix(times[: L - 1], ohlcv[: L - 1])).all()


@pytest.mark.slow
def test_no_duplicate_columns_on_real_data(futures: tuple[np.ndarray, np.ndarray], gapped) -> None:
    for times, ohlcv in (futures, gapped[:2]):
        matrix = feature_matrix(times, ohlcv)[L - 1 :]
        for i in range(F):
            same = (matrix[:, i + 1 :] == matrix[:, i : i + 1]).all(axis=0)
            assert not same.any(), f"{FEATURE_NAMES[i]} duplicates {np.array(FEATURE_NAMES[i + 1 :])[same]}"


# --- the two drivers agree ---------------------------------------------------------


def assert_drivers_agree(times: np.ndarray, ohlcv: np.ndarray, rows: np.ndarray) -> None:
    matrix = feature_matrix(times, ohlcv, chunk_rows=500)
    np.testing.assert_allclose(feature_matrix(times, ohlcv), matrix, **TOL)
    batched = compute_features(windows_at(ohlcv, rows), times[rows])
    np.testing.assert_allclose(batched, matrix[rows], **TOL)
    for t in rows:
        single = compute_features(ohlcv[None, t - L + 1 : t + 1], times[t : t + 1])
        np.testing.assert_allclose(single[0], matrix[t], **TOL, err_msg=f"row {t}")


@pytest.mark.slow
def test_drivers_agree_on_real_futures(futures: tuple[np.ndarray, np.ndarray]) -> None:
    times, ohlcv = futures
    assert_drivers_agree(times, ohlcv, np.arange(L - 1, times.size, 7))


@pytest.mark.slow
def test_drivers_agree_across_a_real_outage(gapped) -> None:
    times, ohlcv, hole, _ = gapped
    around_hole = np.arange(hole.start - 3, hole.stop + L + 3)
    rows = np.union1d(np.arange(L - 1, times.size, 7), around_hole)
    assert_drivers_agree(times, ohlcv, rows)


@pytest.mark.slow
def test_worker_window_from_stored_candles_matches_trainer_row(gapped) -> None:
    """Real candles only, cut and gap-filled per window with an anchor, as the worker does."""
    times, ohlcv, hole, real = gapped
    matrix = feature_matrix(times, ohlcv)
    rows = np.arange(hole.start + 1, hole.stop + L - 1, 5)
    windows = []
    for t in rows:
        start = t - L + 1
        before = np.flatnonzero(real[:start])[-1]
        keep = np.flatnonzero(real[start : t + 1]) + start
        grid = fill_gaps(times[keep], ohlcv[keep], HOUR_MS, start_ms=int(times[start]), end_ms=int(times[t]),
                         anchor_close=float(ohlcv[before, 3]))
        windows.append(grid.ohlcv)
    np.testing.assert_allclose(compute_features(np.stack(windows), times[rows]), matrix[rows], **TOL)


# --- no look-ahead ------------------------------------------------------------------


@pytest.mark.parametrize("k", [L - 1, L, L + 1, 1_000, 1_501, 1_530, 2_222])
@pytest.mark.slow
def test_truncated_history_gives_the_same_rows(gapped, k: int) -> None:
    times, ohlcv, _, _ = gapped
    full = feature_matrix(times, ohlcv)
    np.testing.assert_allclose(feature_matrix(times[:k], ohlcv[:k]), full[:k], **TOL)


@pytest.mark.slow
def test_perturbing_the_future_leaves_past_rows_unchanged(futures: tuple[np.ndarray, np.ndarray]) -> None:
    times, ohlcv = futures
    rng = np.random.default_rng(3)
    full = feature_matrix(times, ohlcv)
    for t in (L - 1, 700, 2_100):
        changed = ohlcv.copy()
        changed[t + 1 :] *= rng.uniform(0.5, 1.5, size=(times.size - t - 1, 5))
        after = feature_matrix(times, changed)
        np.testing.assert_allclose(after[: t + 1], full[: t + 1], **TOL)
        assert not np.allclose(after[t + 1], full[t + 1])


# --- finiteness and scale ------------------------------------------------------------


@pytest.mark.slow
def test_finite_over_all_real_gaps_and_flat_candles(spot_grid: GridCandles) -> None:
    assert (~spot_grid.is_real).sum() >= 40
    matrix = feature_matrix(spot_grid.open_time_ms, spot_grid.ohlcv)
    assert np.isfinite(matrix[L - 1 :]).all()
    flat_share = matrix[:, column("flat_share_168")]
    assert np.nanmax(flat_share) >= 29 / 168


def test_finite_and_neutral_on_a_fully_flat_window() -> None:
    window = np.tile([50.0, 50.0, 50.0, 50.0, 0.0], (1, L, 1))
    row = dict(zip(FEATURE_NAMES, compute_features(window, np.array([0]))[0], strict=True))
    halves = ("rsi_", "range_position_")
    ones = ("volume_ratio_", "volatility_ratio_", "candle_range_atr_", "flat_share_")
    for name, value in row.items():
        if name.startswith(("hour_", "dow_")):
            continue
        expected = 0.5 if name.startswith(halves) else 1.0 if name.startswith(ones) else 0.0
        assert value == expected, name


@pytest.mark.parametrize(
    ("price_factor", "volume_factor", "exact"), [(1000.0, 7.0, False), (1024.0, 8.0, True)]
)
@pytest.mark.slow
def test_scale_free(gapped, price_factor: float, volume_factor: float, exact: bool) -> None:
    times, ohlcv, _, _ = gapped
    scaled = ohlcv * np.array([price_factor] * 4 + [volume_factor])
    base, other = feature_matrix(times, ohlcv), feature_matrix(times, scaled)
    if exact:  # powers of two scale without rounding: the features must not move at all
        np.testing.assert_array_equal(other, base)
    else:
        np.testing.assert_allclose(other, base, rtol=1e-9, atol=1e-12)


# --- hand-computed values -----------------------------------------------------------------


def features_of(ohlcv: np.ndarray, open_time_ms: int = 0) -> dict[str, float]:
    row = compute_features(ohlcv[None], np.array([open_time_ms], dtype=np.int64))[0]
    return dict(zip(FEATURE_NAMES, row.tolist(), strict=True))


def rising_window(growth: float = 1.001) -> np.ndarray:
    close = 100.0 * growth ** np.arange(L)
    return np.column_stack([close / growth, close * 1.002, close * 0.998, close, np.ones(L)])


def test_strictly_rising_prices() -> None:
    window = rising_window()
    f = features_of(window)
    close, high, low = window[:, 3], window[:, 1], window[:, 2]
    for n in (6, 12, 24, 48, 168):
        assert f[f"rsi_{n}"] == 1.0
        assert f[f"momentum_consistency_{n}"] == 1.0
        assert f[f"momentum_{n}"] == pytest.approx(n * math.log(1.001), rel=1e-12)
        expected_pos = (close[-1] - low[-n]) / (high[-1] - low[-n])
        assert f[f"range_position_{n}"] == pytest.approx(expected_pos, rel=1e-12)
        assert f[f"close_to_sma_{n}"] == pytest.approx(close[-1] / close[-n:].mean() - 1.0, rel=1e-10)
        assert f[f"volume_ratio_{n}"] == pytest.approx(1.0, rel=1e-14)
        assert f[f"volume_trend_{n}"] == pytest.approx(0.0, abs=1e-15)
    for k in range(1, 7):
        assert f[f"return_lag_{k}"] == pytest.approx(math.log(1.001), rel=1e-9)
    for n in (6, 12, 24, 48):
        assert f[f"momentum_accel_{n}"] == pytest.approx(0.0, abs=1e-12)
    assert f["candle_range"] == pytest.approx(0.004, rel=1e-12)
    atr_24 = np.mean(high[-24:] - low[-24:])  # each range covers the previous close here
    assert f["candle_range_atr_24"] == pytest.approx(0.004 * close[-1] / atr_24, rel=1e-9)


def test_falling_prices_have_zero_rsi() -> None:
    assert features_of(rising_window(0.999))["rsi_24"] == 0.0


def test_hand_computed_closes_volumes_and_candle() -> None:
    window = np.tile([100.0, 101.0, 99.0, 100.0, 1.0], (L, 1))
    # The last seven closes move +2, -1, +3, -1, +1, -2 (six changes into the current candle).
    window[-7:, 3] = [100.0, 102.0, 101.0, 104.0, 103.0, 104.0, 102.0]
    window[-1] = [100.0, 112.0, 98.0, 102.0, 4.0]
    f = features_of(window)
    close = window[:, 3]

    assert f["rsi_6"] == pytest.approx((2 + 3 + 1) / (2 + 1 + 3 + 1 + 1 + 2), rel=1e-12)
    assert f["momentum_consistency_6"] == pytest.approx(3 / 6, rel=1e-12)
    assert f["momentum_6"] == pytest.approx(math.log(102 / 100), rel=1e-12)
    last6 = close[-6:]
    assert f["close_to_sma_6"] == pytest.approx(102 / last6.mean() - 1, rel=1e-12)
    assert f["bb_position_6"] == pytest.approx((102 - last6.mean()) / (2 * last6.std()), rel=1e-9)
    assert f["bb_width_6"] == pytest.approx(4 * last6.std() / last6.mean(), rel=1e-9)
    decay = (1 - 2 / 7) ** np.arange(24)
    ema = float((close[::-1][:24] * decay).sum() / decay.sum())
    assert f["close_to_ema_6"] == pytest.approx(102 / ema - 1, rel=1e-12)
    log_ret = np.log(last6 / close[-7:-1])
    assert f["volatility_6"] == pytest.approx(log_ret.std(), rel=1e-9)
    assert [f[f"return_lag_{k}"] for k in range(1, 7)] == pytest.approx(log_ret[::-1].tolist(), rel=1e-12)

    assert f["volume_ratio_6"] == pytest.approx(4 / (9 / 6), rel=1e-12)
    assert f["volume_trend_6"] == pytest.approx((6 - 3) / (6 + 3), rel=1e-12)
    assert f["volume_ratio_168"] == pytest.approx(4 / (171 / 168), rel=1e-12)

    assert f["range_position_6"] == pytest.approx((102 - 98) / (112 - 98), rel=1e-12)
    assert f["candle_body"] == pytest.approx(2 / 14, rel=1e-12)
    assert f["candle_upper_wick"] == pytest.approx(10 / 14, rel=1e-12)
    assert f["candle_lower_wick"] == pytest.approx(2 / 14, rel=1e-12)
    assert f["candle_range"] == pytest.approx(14 / 102, rel=1e-12)
    # True ranges, newest first: the current candle, five with moving previous closes, then 2s.
    true_range = [max(112, 104) - min(98, 104)] + [max(101, p) - min(99, p) for p in close[-3:-8:-1]]
    assert f["atr_ratio_6"] == pytest.approx(np.mean(true_range) / 102, rel=1e-12)
    atr_24 = np.mean(true_range + [2.0] * 18)
    assert f["atr_ratio_24"] == pytest.approx(atr_24 / 102, rel=1e-12)
    assert f["candle_range_atr_24"] == pytest.approx(14 / atr_24, rel=1e-12)
    assert f["flat_share_168"] == 0.0


def test_flat_share_counts_gap_filled_candles() -> None:
    window = np.tile([100.0, 101.0, 99.0, 100.0, 1.0], (L, 1))
    window[-30:-5] = [100.0, 100.0, 100.0, 100.0, 0.0]
    assert features_of(window)["flat_share_168"] == pytest.approx(25 / 168, rel=1e-12)


@pytest.mark.parametrize(
    ("when", "hour", "weekday"),
    [
        (datetime(2024, 1, 1, 0, tzinfo=timezone.utc), 0, 0),  # a Monday, midnight UTC
        (datetime(2024, 3, 16, 18, tzinfo=timezone.utc), 18, 5),  # a Saturday
        (datetime(1970, 1, 1, 7, tzinfo=timezone.utc), 7, 3),  # the epoch was a Thursday
    ],
)
def test_calendar_features(when: datetime, hour: int, weekday: int) -> None:
    assert when.weekday() == weekday
    f = features_of(rising_window(), int(when.timestamp() * 1000))
    assert f["hour_sin"] == pytest.approx(math.sin(2 * math.pi * hour / 24), abs=1e-15)
    assert f["hour_cos"] == pytest.approx(math.cos(2 * math.pi * hour / 24), abs=1e-15)
    assert f["dow_sin"] == pytest.approx(math.sin(2 * math.pi * weekday / 7), abs=1e-15)
    assert f["dow_cos"] == pytest.approx(math.cos(2 * math.pi * weekday / 7), abs=1e-15)


# --- input checks -----------------------------------------------------------------------


def test_bad_inputs_raise() -> None:
    window = rising_window()[None]
    with pytest.raises(ValueError, match="windows"):
        compute_features(window[:, 1:], np.array([0]))
    with pytest.raises(ValueError, match="open_time_ms"):
        compute_features(window, np.array([0.0]))
    with pytest.raises(ValueError, match="open_time_ms"):
        compute_features(window, np.array([0, 1]))
    times = HOUR_MS * np.arange(L + 2, dtype=np.int64)
    with pytest.raises(ValueError, match="regular"):
        feature_matrix(np.delete(times, 5), np.ones((L + 1, 5)))
