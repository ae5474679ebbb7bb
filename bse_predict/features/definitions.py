"""The feature definitions: one batched function shared by the trainer and the worker.

The worker holds, per symbol, the last few candles; the trainer holds whole
histories. Both must produce the same features (to rounding), so there is one
definition, :func:`compute_features`, which maps a batch of gap-filled windows
(the last :data:`LOOKBACK_CANDLES` candles, the last one being the candle the
prediction is made for) to one feature row each. :func:`feature_matrix` only
slides that same function over a history.

Design rules (see ``docs/features.md`` for every formula):

* Every feature depends on its window alone: no state between calls and no
  infinite-memory recursion (a classic EMA or Wilder smoothing would make the
  value depend on where the history starts). "EMA" is a truncated,
  renormalised exponential weighting; RSI is Cutler's (simple means).
* Scale-free: ratios, log returns, shares and positions only, never a raw
  price or volume, so one model serves every symbol and price level.
* A 0/0 never yields inf or NaN: it gives the feature's neutral value (0 for
  centred features, 0.5 for positions and shares, 1 for ratios). The
  denominators involved are exactly zero only on exactly flat data, and
  prices are normalised by the current close first, so flat stretches (gap
  fills) give exact zeros whatever the batch size or memory layout.
* Prices must be positive and finite (the candle contract guarantees it).
* Vectorised over the batch: window sums are matrix products with fixed
  weight matrices, so the hot path is a few dozen numpy calls per batch.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bse_predict.candles.grid import OHLCV_FIELDS

__all__ = [
    "FEATURE_VERSION",
    "FEATURE_FAMILIES",
    "FEATURE_NAMES",
    "FEATURE_FAMILY_OF",
    "LOOKBACK_CANDLES",
    "FEATURE_SPEC_HASH",
    "compute_features",
    "feature_matrix",
]

FEATURE_VERSION = "1"
"""Bump whenever a formula changes (it feeds :data:`FEATURE_SPEC_HASH`)."""

PERIODS: tuple[int, ...] = (6, 12, 24, 48, 168)
ACCEL_PERIODS: tuple[int, ...] = (6, 12, 24, 48)
ATR_PERIODS: tuple[int, ...] = (6, 14, 24, 48, 168)
VOLATILITY_RATIOS: tuple[tuple[int, int], ...] = ((24, 168), (6, 24))
RETURN_LAGS = 6
FLAT_PERIOD = 168
CANDLE_ATR_PERIOD = 24
"""The current candle's range is also measured in ATRs of this period."""
EMA_MAX_ROWS = 168
"""An EMA of span n weights the last min(4n, EMA_MAX_ROWS) closes."""

_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0


def _ema_rows(span: int) -> int:
    return min(4 * span, EMA_MAX_ROWS)


FEATURE_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("close_to_sma", tuple(map(str, PERIODS))),
    ("close_to_ema", tuple(map(str, PERIODS))),
    ("bb_position", tuple(map(str, PERIODS))),
    ("bb_width", tuple(map(str, PERIODS))),
    ("rsi", tuple(map(str, PERIODS))),
    ("volume_ratio", tuple(map(str, PERIODS))),
    ("volume_trend", tuple(map(str, PERIODS))),
    ("momentum", tuple(map(str, PERIODS))),
    ("momentum_consistency", tuple(map(str, PERIODS))),
    ("momentum_accel", tuple(map(str, ACCEL_PERIODS))),
    ("range_position", tuple(map(str, PERIODS))),
    ("volatility", tuple(map(str, PERIODS))),
    ("volatility_ratio", tuple(f"{a}_{b}" for a, b in VOLATILITY_RATIOS)),
    ("atr_ratio", tuple(map(str, ATR_PERIODS))),
    ("return_lag", tuple(str(k) for k in range(1, RETURN_LAGS + 1))),
    ("hour", ("sin", "cos")),
    ("dow", ("sin", "cos")),
    ("candle", ("body", "upper_wick", "lower_wick", "range", f"range_atr_{CANDLE_ATR_PERIOD}")),
    ("flat_share", (str(FLAT_PERIOD),)),
)
"""(family, suffixes): the column order of the feature matrix; a column is named ``{family}_{suffix}``."""

FEATURE_NAMES: tuple[str, ...] = tuple(f"{family}_{sfx}" for family, sfxs in FEATURE_FAMILIES for sfx in sfxs)

FEATURE_FAMILY_OF: dict[str, str] = {f"{family}_{sfx}": family for family, sfxs in FEATURE_FAMILIES for sfx in sfxs}
"""Column name -> its family (``range_position_168`` -> ``range_position``)."""

LOOKBACK_CANDLES: int = max(
    max(PERIODS) + 1,  # momentum and volatility over n returns need n + 1 closes
    max(ATR_PERIODS) + 1,  # a true range needs the previous close
    2 * max(ACCEL_PERIODS) + 1,  # momentum n rows ago
    max(_ema_rows(n) for n in PERIODS),
    RETURN_LAGS + 1,
    FLAT_PERIOD,
)

FEATURE_SPEC_HASH: str = hashlib.sha256(
    json.dumps(
        {
            "version": FEATURE_VERSION,
            "names": FEATURE_NAMES,
            "lookback": LOOKBACK_CANDLES,
            "ohlcv_fields": OHLCV_FIELDS,
            "periods": PERIODS,
            "accel_periods": ACCEL_PERIODS,
            "atr_periods": ATR_PERIODS,
            "volatility_ratios": VOLATILITY_RATIOS,
            "return_lags": RETURN_LAGS,
            "flat_period": FLAT_PERIOD,
            "candle_atr_period": CANDLE_ATR_PERIOD,
            "ema": {"alpha": "2/(n+1)", "rows": [_ema_rows(n) for n in PERIODS]},
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
).hexdigest()


def _sum_weights(periods: tuple[int, ...], rows: int) -> np.ndarray:
    """float64[rows, P]: column j sums the newest ``periods[j]`` rows (row 0 = newest)."""
    weights = np.zeros((rows, len(periods)))
    for j, n in enumerate(periods):
        weights[:n, j] = 1.0
    return weights


def _ema_weights(periods: tuple[int, ...], rows: int) -> np.ndarray:
    """float64[rows, P]: truncated exponential weights (1 - a)^k, a = 2/(n+1), summing to 1."""
    weights = np.zeros((rows, len(periods)))
    for j, n in enumerate(periods):
        decay = (1.0 - 2.0 / (n + 1)) ** np.arange(_ema_rows(n))
        weights[: decay.size, j] = decay / decay.sum()
    return weights


def _trend_weights(periods: tuple[int, ...], rows: int) -> np.ndarray:
    """float64[rows, P]: sum of the newest n/2 rows - sum of the n/2 rows before them."""
    weights = np.zeros((rows, len(periods)))
    for j, n in enumerate(periods):
        weights[: n // 2, j] = 1.0
        weights[n // 2 : n, j] = -1.0
    return weights


_L = LOOKBACK_CANDLES
_P = len(PERIODS)
_N = np.array(PERIODS, dtype=np.float64)
_N_ATR = np.array(ATR_PERIODS, dtype=np.float64)
# Window sums over the closes (newest first): the SMA sums; with the EMAs appended.
_CLOSE_SUM_WEIGHTS = _sum_weights(PERIODS, _L)
_CLOSE_WEIGHTS = np.hstack([_CLOSE_SUM_WEIGHTS, _ema_weights(PERIODS, _L)])
_VOLUME_WEIGHTS = np.hstack([_sum_weights(PERIODS, _L), _trend_weights(PERIODS, _L)])
# Window sums over the L - 1 one-candle changes, for the union of the periods used.
_CHANGE_PERIODS: tuple[int, ...] = tuple(sorted(set(PERIODS) | set(ATR_PERIODS)))
_CHANGE_WEIGHTS = _sum_weights(_CHANGE_PERIODS, _L - 1)
_CHANGE_COL_PERIODS = np.array([_CHANGE_PERIODS.index(n) for n in PERIODS])
_CHANGE_COL_ATR = np.array([_CHANGE_PERIODS.index(n) for n in ATR_PERIODS])
# Ages (rows back from the current candle) whose close the momentum features need.
_MOMENTUM_AGES: tuple[int, ...] = tuple(sorted(set(PERIODS) | {2 * n for n in ACCEL_PERIODS}))
_MOM_COL_PERIODS = np.array([_MOMENTUM_AGES.index(n) for n in PERIODS])
_MOM_COL_ACCEL = np.array([_MOMENTUM_AGES.index(n) for n in ACCEL_PERIODS])
_MOM_COL_ACCEL_2N = np.array([_MOMENTUM_AGES.index(2 * n) for n in ACCEL_PERIODS])
_VOL_RATIO_NUM = np.array([PERIODS.index(a) for a, _ in VOLATILITY_RATIOS])
_VOL_RATIO_DEN = np.array([PERIODS.index(b) for _, b in VOLATILITY_RATIOS])


def _ratio(num: np.ndarray, den: np.ndarray, neutral: float) -> np.ndarray:
    """num / den, and ``neutral`` where den == 0 (no warning, no inf/NaN)."""
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, neutral), where=den != 0)


def _price_level_features(c: np.ndarray) -> dict[str, np.ndarray]:
    """SMA, EMA and Bollinger features from closes c[B, L] (newest first)."""
    dev = c / c[:, :1] - 1.0  # each close relative to the current one: exactly 0 when flat
    sums = dev @ _CLOSE_WEIGHTS
    mean, ema = sums[:, :_P] / _N, sums[:, _P:]
    var = np.maximum((dev * dev) @ _CLOSE_SUM_WEIGHTS / _N - mean * mean, 0.0)
    std = np.sqrt(var)
    return {
        "close_to_sma": -mean / (1.0 + mean),
        "close_to_ema": -ema / (1.0 + ema),
        "bb_position": _ratio(-mean, 2.0 * std, 0.0),
        "bb_width": 4.0 * std / (1.0 + mean),
    }


def _change_features(h: np.ndarray, low: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """RSI, consistency, volatility, ATR and return lags from the one-candle changes."""
    cur, prev = c[:, :-1], c[:, 1:]
    log_ret = np.log(cur / prev)
    change = cur - prev
    true_range = np.maximum(h[:, :-1], prev) - np.minimum(low[:, :-1], prev)
    series = (log_ret, log_ret * log_ret, np.maximum(change, 0.0), np.abs(change), (change > 0) * 1.0)
    ret_sum, ret_sq, gain, move, ups = ((x @ _CHANGE_WEIGHTS)[:, _CHANGE_COL_PERIODS] for x in series)
    ret_mean = ret_sum / _N
    volatility = np.sqrt(np.maximum(ret_sq / _N - ret_mean * ret_mean, 0.0))
    atr = (true_range @ _CHANGE_WEIGHTS)[:, _CHANGE_COL_ATR] / _N_ATR
    return {
        "rsi": _ratio(gain, move, 0.5),
        "momentum_consistency": ups / _N,
        "volatility": volatility,
        "volatility_ratio": _ratio(volatility[:, _VOL_RATIO_NUM], volatility[:, _VOL_RATIO_DEN], 1.0),
        "atr_ratio": atr / c[:, :1],
        "return_lag": log_ret[:, :RETURN_LAGS],
    }


def _momentum_features(c: np.ndarray) -> dict[str, np.ndarray]:
    """Log returns over n candles, and their change against the same span n candles earlier."""
    log_move = np.log(c[:, :1] / c[:, _MOMENTUM_AGES])  # log(c_now / c_age)
    return {
        "momentum": log_move[:, _MOM_COL_PERIODS],
        "momentum_accel": 2.0 * log_move[:, _MOM_COL_ACCEL] - log_move[:, _MOM_COL_ACCEL_2N],
    }


def _range_features(h: np.ndarray, low: np.ndarray, c: np.ndarray) -> dict[str, np.ndarray]:
    """Position of the close in the high-low range of the newest n candles."""
    highest = np.column_stack([h[:, :n].max(axis=1) for n in PERIODS])
    lowest = np.column_stack([low[:, :n].min(axis=1) for n in PERIODS])
    return {"range_position": _ratio(c[:, :1] - lowest, highest - lowest, 0.5)}


def _volume_features(h: np.ndarray, low: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """Volume against its mean, the trend of volume, and the share of flat zero-volume candles."""
    sums = v @ _VOLUME_WEIGHTS
    total, trend = sums[:, :_P], sums[:, _P:]
    recent = slice(0, FLAT_PERIOD)
    flat = (h[:, recent] == low[:, recent]) & (v[:, recent] == 0.0)
    return {
        "volume_ratio": _ratio(v[:, :1] * _N, total, 1.0),
        "volume_trend": _ratio(trend, total, 0.0),
        "flat_share": flat.mean(axis=1, keepdims=True),
    }


def _candle_features(
    o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, atr_ratio: np.ndarray
) -> dict[str, np.ndarray]:
    """Body and wick shape of the current candle (column 0 of the newest-first arrays),
    its range relative to the close and to the ATR (``atr_ratio`` = ATR / close, float[B])."""
    o0, h0, l0, c0 = o[:, 0], h[:, 0], low[:, 0], c[:, 0]
    span = h0 - l0
    parts = np.stack([c0 - o0, h0 - np.maximum(o0, c0), np.minimum(o0, c0) - l0], axis=1)
    shape = _ratio(parts, span[:, None], 0.0)
    range_ratio = span / c0
    return {"candle": np.column_stack([shape, range_ratio, _ratio(range_ratio, atr_ratio, 1.0)])}


def _calendar_features(open_time_ms: np.ndarray) -> dict[str, np.ndarray]:
    """Hour of day and day of week (UTC) of the current candle's open, on the unit circle."""
    hour = (open_time_ms // _MS_PER_HOUR) % 24
    weekday = (open_time_ms // _MS_PER_DAY + _EPOCH_WEEKDAY) % 7
    hour_angle = (2.0 * np.pi / 24.0) * hour
    day_angle = (2.0 * np.pi / 7.0) * weekday
    return {
        "hour": np.column_stack([np.sin(hour_angle), np.cos(hour_angle)]),
        "dow": np.column_stack([np.sin(day_angle), np.cos(day_angle)]),
    }


def compute_features(windows: np.ndarray, open_time_ms: np.ndarray) -> np.ndarray:
    """Feature rows for a batch of gap-filled windows.

    ``windows``: float64[B, LOOKBACK_CANDLES, 5] in :data:`~bse_predict.candles.grid.OHLCV_FIELDS`
    order, oldest first, the last row being the candle predicted for.
    ``open_time_ms``: int[B], the open time of each window's last candle.
    Returns float64[B, len(FEATURE_NAMES)], columns in :data:`FEATURE_NAMES` order.
    """
    w = np.asarray(windows, dtype=np.float64)
    times = np.asarray(open_time_ms)
    if w.ndim != 3 or w.shape[1:] != (LOOKBACK_CANDLES, len(OHLCV_FIELDS)):
        raise ValueError(f"windows must have shape (B, {LOOKBACK_CANDLES}, 5), got {w.shape}")
    if times.shape != (w.shape[0],) or not np.issubdtype(times.dtype, np.integer):
        raise ValueError(
            f"open_time_ms must be an integer array of shape ({w.shape[0]},), got {times.dtype} {times.shape}"
        )
    # One contiguous copy, newest candle first: every derived array is then C-contiguous,
    # so the arithmetic is the same whatever the caller's layout (sliding views included).
    o, h, low, c, v = np.ascontiguousarray(w[:, ::-1, :].transpose(2, 0, 1))
    changes = _change_features(h, low, c)
    candle_atr = changes["atr_ratio"][:, ATR_PERIODS.index(CANDLE_ATR_PERIOD)]
    blocks = (
        _price_level_features(c)
        | changes
        | _momentum_features(c)
        | _range_features(h, low, c)
        | _volume_features(h, low, v)
        | _candle_features(o, h, low, c, candle_atr)
        | _calendar_features(times.astype(np.int64))
    )
    return np.concatenate([blocks[family] for family, _ in FEATURE_FAMILIES], axis=1)


def feature_matrix(open_time_ms: np.ndarray, ohlcv: np.ndarray, chunk_rows: int = 4096) -> np.ndarray:
    """Features for every row of a gap-filled history (the trainer's driver).

    ``open_time_ms`` int[T] must be a regular grid (see :func:`bse_predict.candles.grid.fill_gaps`),
    ``ohlcv`` float64[T, 5]. Returns float64[T, F]; rows 0 .. LOOKBACK_CANDLES - 2
    are NaN (not enough history). Row t equals ``compute_features`` of the window
    ending at t; windows are taken as views and processed ``chunk_rows`` at a time.
    """
    times = np.asarray(open_time_ms)
    values = np.asarray(ohlcv, dtype=np.float64)
    if times.ndim != 1 or not np.issubdtype(times.dtype, np.integer):
        raise ValueError(f"open_time_ms must be a 1-D integer array, got {times.dtype} {times.shape}")
    if values.shape != (times.shape[0], len(OHLCV_FIELDS)):
        raise ValueError(f"ohlcv must have shape ({times.shape[0]}, {len(OHLCV_FIELDS)}), got {values.shape}")
    steps = np.diff(times)
    if steps.size and (steps[0] <= 0 or np.any(steps != steps[0])):
        raise ValueError("open_time_ms must be a regular increasing grid: fill the gaps first")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")

    out = np.full((times.shape[0], len(FEATURE_NAMES)), np.nan)
    first = LOOKBACK_CANDLES - 1
    if times.shape[0] <= first:
        return out
    windows = sliding_window_view(values, (LOOKBACK_CANDLES, len(OHLCV_FIELDS)))[:, 0]
    for begin in range(0, windows.shape[0], chunk_rows):
        end = min(begin + chunk_rows, windows.shape[0])
        rows = slice(first + begin, first + end)
        out[rows] = compute_features(windows[begin:end], times[rows])
    return out
