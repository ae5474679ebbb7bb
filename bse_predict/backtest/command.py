"""``bse-predict backtest``: replay candles through the worker's path, trade the signals, report.

The orchestration only: predictions come from :func:`bse_predict.backtest.predictions.replay_predictions`
(the worker's CandleProcessor), trades from :mod:`bse_predict.backtest.trading`, the report
from :mod:`bse_predict.backtest.report`. By default trading starts after the
newest candle a version was trained on (its manifest's data span), so the
backtest is out of sample; ``start_ms`` overrides that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from configs.settings import Settings
from bse_predict.backtest.report import ModelBacktest, build_backtest, write_report
from bse_predict.candles.files import CandleSeries
from bse_predict.errors import BsePredictError
from bse_predict.serving.manifest import load_manifest
from bse_predict.ensembles.member_runner import load_model_set
from bse_predict.backtest.trading import trades_from_predictions
from bse_predict.backtest.predictions import replay_predictions

__all__ = ["BacktestRequest", "run_backtest", "BacktestError"]

_WARM_UP_SLACK = 48  # candles replayed before the first traded one beyond min_history


class BacktestError(BsePredictError):
    """A backtest that cannot be run as asked."""


@dataclass(frozen=True)
class BacktestRequest:
    version: str
    models: tuple[str, ...]  # model names of the version; empty = its served model
    compare_version: str | None
    start_ms: int | None
    targets: tuple[str, ...]


def _models_of(settings: Settings, version: str, names: Sequence[str]) -> list[str]:
    manifest = load_manifest(settings.models_dir / version)
    known = list(dict.fromkeys(m.name for m in manifest.models))
    if not names:
        return [manifest.served_model]
    if list(names) == ["all"]:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BacktestError(f"version {version} has no model {unknown[0]!r}; it has {', '.join(known)}")
    return list(names)


def _default_start(settings: Settings, versions: Sequence[str]) -> int:
    ends = [span.end_ms for v in versions for span in load_manifest(settings.models_dir / v).data_span.values()]
    return max(ends) + settings.market.timeframe_ms


def _window(series: Sequence[CandleSeries], start_ms: int, warm_up: int) -> list[CandleSeries]:
    out = []
    for one in series:
        first = max(0, int((one.open_time_ms < start_ms).sum()) - warm_up)
        if (one.open_time_ms >= start_ms).any():
            out.append(CandleSeries(one.symbol, one.timeframe, one.open_time_ms[first:], one.ohlcv[first:],
                                    one.source, one.duplicates_dropped))
    return out


def _one(settings: Settings, version: str, model: str, series: Sequence[CandleSeries], start_ms: int,
         targets: Sequence[str], progress: Callable[[str, int], None]) -> ModelBacktest:
    served = load_model_set(settings.models_dir / version, settings.worker.ensemble, model_name=model,
                            signing_key=settings.model_signing_secret)
    missing = [t for t in targets if t not in served.targets]
    if missing:
        raise BacktestError(f"{version}/{model} has no target {missing[0]}; it has {', '.join(served.targets)}")
    label = f"{version}/{model}"
    window = _window(series, start_ms, served.min_history + _WARM_UP_SLACK)
    predictions = replay_predictions(settings, served, window, lambda ticks: progress(label, ticks))
    signals = settings.signals
    trades = trades_from_predictions(predictions, window, settings.market.horizon_candles,
                                     signals.round_trip_cost_pct, settings.backtest.max_open_per_symbol_target,
                                     start_ms)
    end_ms = max(int(one.open_time_ms[-1]) for one in window) + settings.market.timeframe_ms
    symbol_hours = sum(float((one.open_time_ms >= start_ms).sum()) for one in window)
    traded = [p for p in predictions if p.open_time >= start_ms]
    return build_backtest(label, trades, targets, signals.round_trip_cost_pct, start_ms, end_ms, symbol_hours,
                          len(traded), sum(p.degraded for p in traded))


def run_backtest(settings: Settings, series: Sequence[CandleSeries], request: BacktestRequest, out: Path,
                 progress: Callable[[str, int], None]) -> Path:
    """Backtest every requested model (and the comparison version's served model); write the report."""
    versions = [request.version] + ([request.compare_version] if request.compare_version else [])
    start_ms = request.start_ms if request.start_ms is not None else _default_start(settings, versions)
    if not any((one.open_time_ms >= start_ms).any() for one in series):
        when = datetime.fromtimestamp(start_ms / 1000, UTC).isoformat()
        raise BacktestError(f"no candles from {when} on (after the versions' training data); pass --start to "
                            "backtest an earlier, in-sample period")
    runs = [(request.version, m) for m in _models_of(settings, request.version, request.models)]
    if request.compare_version:
        runs.append((request.compare_version, _models_of(settings, request.compare_version, ())[0]))
    results = [_one(settings, v, m, series, start_ms, request.targets, progress) for v, m in runs]
    signals = settings.signals
    meta = {
        "versions": ", ".join(versions),
        "symbols": ", ".join(sorted({one.symbol for one in series})),
        "trading from": datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(),
        "horizon hours": settings.market.horizon_hours,
        "round trip cost %": round(signals.round_trip_cost_pct, 4),
        "EV rule": signals.require_positive_ev,
        "max open per symbol and target": settings.backtest.max_open_per_symbol_target,
    }
    compare = (0, len(results) - 1) if request.compare_version else ((0, 1) if len(results) == 2 else None)
    return write_report(out, results, request.targets, meta, compare)
