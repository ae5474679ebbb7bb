"""Measure two ways to give a model more to learn from (issue 16, part 4), out of fold.

- **pooled**: the family trained on every symbol of the candle folders (spot and
  futures) instead of the evaluated symbols alone; optionally with each symbol's
  features standardised by that symbol's own fit-row statistics (per-symbol
  normalisation, fitted inside each fold).
- **context**: the evaluated symbols with three cross-asset columns added: BTC's 1 h
  log return, BTC's realised volatility over 24 h, and breadth (the share of all
  loaded series whose last hourly return is up, among those with a candle that hour
  and the hour before). ``same`` reads them at the row's own hour, ``prev`` one hour
  earlier (what a worker can know without waiting for the other symbols' candles).

Every variant is scored on the same out-of-fold rows of the evaluated series, with
the same purged, embargoed walk-forward folds, fit / calibration cuts and
temperature calibration as ``bse-predict evaluate``, and compared with the base
(evaluated symbols only, 82 features) by the paired 3-day block bootstrap of the
per-row log-loss difference. Usage (see docs/models/context.md)::

    python -m benchmarks.pooled_context --futures ../shared/data/candles/binance-futures \\
        --spot ../shared/data/candles/binance-spot --end 2023-12-30 --rows 12000 --folds 3
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.evaluation.bootstrap import day_blocks, paired_bootstrap
from bse_predict.evaluation.calibration import make_calibrator
from bse_predict.evaluation.effective_sample import non_overlapping_windows
from bse_predict.evaluation.fold_predictions import fold_masks
from bse_predict.evaluation.walk_forward import make_folds
from bse_predict.families import get_model
from bse_predict.scoring.probabilities import climatology_shares, row_log_loss
from bse_predict.serving.signals import target_label
from bse_predict.training.dataset import SymbolDataset, build_dataset
from bse_predict.training.pooling import PooledRows, pool_rows
from configs.settings import load_settings

_HOUR_MS = 3_600_000
_VOL_HOURS = 24
BTC = "futures:BTCUSDT"


def _load(folder: Path, market: str, end_ms: int, rows: int) -> list[CandleSeries]:
    out = []
    for one in read_candle_files([folder]):
        keep = one.open_time_ms < end_ms
        cut = CandleSeries(f"{market}:{one.symbol}", one.timeframe, one.open_time_ms[keep], one.ohlcv[keep],
                           one.source).tail(rows)
        if len(cut.open_time_ms):
            out.append(cut)
    return out


def hourly_returns(series: CandleSeries) -> dict[int, float]:
    """open time -> log(close / previous hour's close), for candles whose previous hour is real."""
    t, close = series.open_time_ms, series.ohlcv[:, 3]
    follows = np.flatnonzero(np.diff(t) == _HOUR_MS) + 1
    return dict(zip(t[follows].tolist(), np.log(close[follows] / close[follows - 1]).tolist(), strict=True))


def context_table(series: list[CandleSeries]) -> tuple[np.ndarray, np.ndarray]:
    """(hours int64[H], columns float64[H, 3]): BTC return, BTC 24 h realised volatility, breadth,
    each from candles opening at or before the hour. Missing values are NaN."""
    returns = [hourly_returns(s) for s in series]
    hours = np.array(sorted(set().union(*returns)), dtype=np.int64)
    index = {h: i for i, h in enumerate(hours.tolist())}
    up = np.zeros(len(hours))
    seen = np.zeros(len(hours))
    for one in returns:
        rows = np.fromiter((index[h] for h in one), dtype=np.int64, count=len(one))
        np.add.at(seen, rows, 1.0)
        np.add.at(up, rows, np.fromiter(one.values(), dtype=float, count=len(one)) > 0)
    btc = np.full(len(hours), np.nan)
    btc_returns = returns[[s.symbol for s in series].index(BTC)]
    btc[[index[h] for h in btc_returns]] = list(btc_returns.values())
    grid = np.arange(hours[0], hours[-1] + _HOUR_MS, _HOUR_MS)
    on_grid = np.full(len(grid), np.nan)
    on_grid[(hours - hours[0]) // _HOUR_MS] = btc
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([np.full(_VOL_HOURS - 1, np.nan), on_grid]),
                                                       _VOL_HOURS)
    filled = np.isfinite(windows).sum(axis=1)
    squares = np.nan_to_num(windows ** 2).sum(axis=1)
    vol = np.where(filled >= _VOL_HOURS // 2, np.sqrt(squares / np.maximum(filled, 1)), np.nan)
    columns = np.column_stack([btc, vol[(hours - hours[0]) // _HOUR_MS], up / np.maximum(seen, 1.0)])
    return hours, columns


def context_columns(open_time_ms: np.ndarray, hours: np.ndarray, table: np.ndarray, lag_hours: int) -> np.ndarray:
    """Each row's context ``lag_hours`` before its open time; missing -> neutral (0, median vol, 0.5)."""
    wanted = open_time_ms - lag_hours * _HOUR_MS
    at = np.clip(np.searchsorted(hours, wanted), 0, len(hours) - 1)
    out = np.where((hours[at] == wanted)[:, None], table[at], np.nan)
    neutral = np.array([0.0, float(np.nanmedian(table[:, 1])), 0.5])
    return np.where(np.isfinite(out), out, neutral)


def _standardise(features: np.ndarray, symbol_index: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Each symbol's features minus its fit rows' mean, over their standard deviation."""
    out = features.copy()
    for s in np.unique(symbol_index):
        mine = symbol_index == s
        ref = features[mine & fit]
        if len(ref) < 2:
            continue
        sd = ref.std(axis=0)
        out[mine] = (features[mine] - ref.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return out


def _fit_predict(family: str, params: dict, X: np.ndarray, y: np.ndarray, fit: np.ndarray,
                 calibration: np.ndarray, test: np.ndarray) -> np.ndarray:
    model = get_model(family, **params)
    model.train(X[fit], y[fit])
    calibrator = make_calibrator("temperature").fit(model.predict_proba(X[calibration]), y[calibration])
    return calibrator.transform(model.predict_proba(X[test]))


def measure_target(rows: PooledRows, n_eval: int, contexts: dict[str, np.ndarray], family: str, params: dict,
                   folds_n: int, horizon_ms: int, variants: list[str]) -> dict[str, list[np.ndarray]]:
    """Out-of-fold test probabilities (calibrated) of every variant, and the test rows' labels."""
    is_eval = rows.symbol_index < n_eval
    folds = make_folds(rows.open_time_ms[is_eval], folds_n, 0.5)
    masks = fold_masks(rows, folds, horizon_ms, 24 * _HOUR_MS, 0.2)
    out: dict[str, list[np.ndarray]] = {name: [] for name in [*variants, "climatology", "labels", "time", "symbol"]}
    for m in masks:
        test, calibration = m.test & is_eval, m.calibration & is_eval
        y = rows.labels
        out["labels"].append(y[test])
        out["time"].append(rows.open_time_ms[test])
        out["symbol"].append(rows.symbol_index[test])
        out["climatology"].append(np.tile(climatology_shares(y[m.train & is_eval]), (int(test.sum()), 1)))
        for name in variants:
            fit = m.fit if name.startswith("pooled") else m.fit & is_eval
            X = rows.features
            if name == "pooled_normalised":
                X = _standardise(X, rows.symbol_index, m.fit)
            elif name.startswith("context"):
                X = np.hstack([X, contexts[name]])
            started = time.perf_counter()
            out[name].append(_fit_predict(family, params, X, y, fit, calibration, test))
            print(f"  {rows.target} fold {m.fold.index} {name}: {int(fit.sum())} fit rows, "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
    return out


def summarise(parts: dict[str, list[np.ndarray]], variants: list[str], horizon_ms: int) -> dict:
    labels, times, symbols = (np.concatenate(parts[k]) for k in ("labels", "time", "symbol"))
    blocks = day_blocks(times, 3)
    base = row_log_loss(np.concatenate(parts["base"]), labels)
    climatology = row_log_loss(np.concatenate(parts["climatology"]), labels)
    summary = {"test_rows": len(labels), "n_eff": non_overlapping_windows(times, symbols, horizon_ms),
               "climatology_log_loss": float(climatology.mean())}
    for name in variants:
        loss = row_log_loss(np.concatenate(parts[name]), labels)
        entry = {"log_loss": float(loss.mean())}
        for ref_name, ref in (("base", base), ("climatology", climatology)):
            if name == ref_name:
                continue
            diff, improvement = paired_bootstrap(loss, ref, blocks, 1000, 0.95, seed=0)
            entry[f"vs_{ref_name}"] = {"difference": diff.model_dump(), "improvement": improvement.model_dump()}
        summary[name] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--futures", type=Path, required=True, help="folder of the evaluated (futures) candles")
    parser.add_argument("--spot", type=Path, required=True, help="folder of the extra (spot) candles")
    parser.add_argument("--end", default="2023-12-30", help="use candles opening before this UTC date")
    parser.add_argument("--rows", type=int, default=12000, help="newest hours per series before --end")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--family", default="random_forest")
    parser.add_argument("--variants", default="base,pooled,pooled_normalised,context_same,context_prev")
    parser.add_argument("--out", type=Path, default=Path("reports/pooled-context.json"))
    args = parser.parse_args()
    settings = load_settings()
    end_ms = int(datetime.fromisoformat(args.end).replace(tzinfo=UTC).timestamp() * 1000)
    futures = _load(args.futures, "futures", end_ms, args.rows)
    series = futures + _load(args.spot, "spot", end_ms, args.rows)
    market = settings.market
    datasets: list[SymbolDataset] = [build_dataset(s, market.targets_pct, market.horizon_candles) for s in series]
    hours, table = context_table(series)
    variants = args.variants.split(",")
    params = settings.models.params_for(args.family, target_label(market.targets_pct[0]))
    horizon_ms = market.horizon_hours * _HOUR_MS
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "series": [s.symbol for s in series]}
    for pct in market.targets_pct:
        target = target_label(pct)
        rows = pool_rows(datasets, target, market.timeframe_ms)
        contexts = {"context_same": context_columns(rows.open_time_ms, hours, table, 0),
                    "context_prev": context_columns(rows.open_time_ms, hours, table, 1)}
        parts = measure_target(rows, len(futures), contexts, args.family, settings.models.params_for(args.family, target),
                               args.folds, horizon_ms, variants)
        report[target] = summarise(parts, variants, horizon_ms)
        print(json.dumps(report[target], indent=1), flush=True)
    report["params"] = params
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
