"""The backtest's predictions are the worker's: the same candles through the real worker on Kafka
and Redis, and through the backtest's in-memory replay, give the same messages. The version is
a small ensemble (RandomForest + HMM regimes, regime-specific weights) served by the generic
path, so this also proves that the worker serves an ensemble graph with its regime."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from bse_predict.cli import app
from configs.settings import Settings
from bse_predict.candles.files import CandleSeries
from tests.conftest import ENSEMBLE_VERSION as VERSION
from bse_predict.ensembles.member_runner import ServedEnsemble, load_model_set
from bse_predict.candles.schema import Prediction
from tests.support.kafka_io import read_until, send_raw
from tests.support.worker_process import WorkerProcess
from bse_predict.backtest.predictions import replay_predictions
from bse_predict.stream.replay import candle_records
from bse_predict.connections.topics import TopicNames, ensure_topics
from bse_predict.connections.clients import client_environment

pytestmark = pytest.mark.integration

HOURS = 260


def test_backtest_predictions_equal_the_workers_for_the_same_candles(
    isolated: Settings, ensemble_models: Path, futures_series: dict[str, CandleSeries], tmp_path: Path
) -> None:
    settings = isolated.model_copy(update={"models_dir": ensemble_models})
    asyncio.run(ensure_topics(settings))
    series = [futures_series[s].tail(HOURS) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")]
    model_set = load_model_set(ensemble_models / VERSION, settings.worker.ensemble)  # what the worker loads
    assert isinstance(model_set, ServedEnsemble)  # the default: member by member
    assert model_set.model_name == "ensemble" and model_set.input_kinds == ("features", "sequence")
    expected = {p.id: p for p in replay_predictions(settings, model_set, series)}
    assert len(expected) == 3 * (HOURS - model_set.min_history + 1)

    env = {**client_environment(settings),
           "BSE_TOPIC_PREFIX": settings.topic_prefix, "BSE_MODELS_DIR": str(ensemble_models)}
    with WorkerProcess(env, tmp_path / "worker.log") as worker:
        asyncio.run(send_raw(settings.kafka_bootstrap, TopicNames.of(settings).candles,
                             [(r.symbol.encode(), r.payload) for r in candle_records(series)]))
        records = asyncio.run(read_until(settings.kafka_bootstrap, TopicNames.of(settings).predictions,
                                         len(expected), 120, identity=lambda r: orjson.loads(r.value)["id"]))
        live = {p.id: p for p in (Prediction.model_validate_json(r.value) for r in records)}
        assert set(live) == set(expected), worker.log_tail()

    worst = 0.0
    for candle_id, prediction in live.items():
        replayed = expected[candle_id]
        assert prediction.model == replayed.model and prediction.model.name == "ensemble"
        assert prediction.degraded is False and replayed.degraded is False
        assert prediction.regime is not None and prediction.regime.state == replayed.regime.state
        assert prediction.regime.p == pytest.approx(replayed.regime.p, abs=1e-6)
        for target, part in prediction.targets.items():
            other = replayed.targets[target]
            assert (part.signal, part.direction) == (other.signal, other.direction)
            worst = max(worst, float(np.max(np.abs(np.array([part.p_up, part.p_down, part.p_none])
                                                   - np.array([other.p_up, other.p_down, other.p_none])))))
    assert worst < 1e-6, f"backtest and worker differ by {worst}"


def test_backtest_command_writes_the_report_for_every_model_of_the_version(ensemble_models: Path, tmp_path: Path,
                                                                          futures_series: dict[str, CandleSeries]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        one = futures_series[symbol].tail(700)
        rows = "\n".join(f"{t},{o},{h},{lo},{c},{v}" for t, (o, h, lo, c, v) in zip(one.open_time_ms.tolist(),
                                                                                  one.ohlcv.tolist(), strict=True))
        (data / f"{symbol}-1h.csv").write_text("open_time_ms,open,high,low,close,volume\n" + rows + "\n")
    out = tmp_path / "report"
    start = np.datetime_as_string(np.datetime64(int(futures_series["BTCUSDT"].open_time_ms[-450]), "ms"), unit="D")
    start_ms = int(np.datetime64(start, "ms").astype(np.int64))
    traded = sum(int((futures_series[s].tail(700).open_time_ms >= start_ms).sum()) for s in ("BTCUSDT", "ETHUSDT"))
    result = CliRunner().invoke(app, ["backtest", "--data", str(data), "--version", VERSION, "--out", str(out),
                                      "--models", "ensemble,ensemble_stacking,ensemble_member_random_forest",
                                      "--start", start], env={"BSE_MODELS_DIR": str(ensemble_models)})
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {f"{VERSION}/ensemble", f"{VERSION}/ensemble_stacking",
                                      f"{VERSION}/ensemble_member_random_forest"}
    for model in metrics["models"].values():
        assert model["predictions"] == traded and model["degraded"] == 0
        for stats in model["targets"].values():
            assert stats["break_even_hit_rate"] > 0.5 and stats["trades"] >= 0
    assert (out / "equity.png").stat().st_size > 10_000 and "## Target 2%" in (out / "report.md").read_text()
    refused = CliRunner().invoke(app, ["backtest", "--data", str(data), "--version", VERSION, "--out", str(out)],
                                 env={"BSE_MODELS_DIR": str(ensemble_models)})
    assert refused.exit_code == 2 and "after the versions' training data" in refused.output
