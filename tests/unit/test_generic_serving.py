"""The worker serves any family from the manifest with the same code: a version whose served
family reads 168-hour sequences (the HMM, the TCN), or both inputs (the regime and LSTM hybrids), goes through
``predict_windows`` exactly like the forest."""

from __future__ import annotations

import numpy as np
import pytest

from configs.settings import load_settings
from bse_predict.training.train import train_version
from bse_predict.candles.files import CandleSeries
from bse_predict.training.dataset import build_dataset
from bse_predict.families import BasePredictor
from bse_predict.candles.grid import fill_gaps
from bse_predict.serving.manifest import load_manifest
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.serving.model_set import predict_windows
from bse_predict.candles.window import window_ending_at

STEP_MS = 3_600_000


@pytest.mark.parametrize("family", ["hmm_regime", "lorentzian_knn", "random_forest_regimes", "tcn", "lstm_hybrid",
                                    "logistic"])
def test_a_version_served_by_any_family_answers_through_the_worker_path(
    family: str, futures_series: dict[str, CandleSeries], tmp_path
) -> None:
    from bse_predict.families import get_model

    settings = load_settings(models_dir=str(tmp_path), training={"max_rows_per_symbol": 1500},
                             models={"served": family, "families": {
                                 **{name: {"enabled": False} for name in load_settings().models.families},
                                 family: {"enabled": True, "params": get_model(family).fast_params}}})
    series = [futures_series["ETHUSDT"]]
    folder = train_version(series, settings, "v", show_progress=False)
    served = ServedModelSet.load(folder)
    manifest = load_manifest(folder)
    assert served.input_kinds == tuple(sorted(get_model(family).input_kinds))
    assert manifest.min_history == max({"sequence": 192, "features": 169}[k] for k in get_model(family).input_kinds)

    eth = futures_series["ETHUSDT"].tail(1500 + 191)
    grid = fill_gaps(eth.open_time_ms, eth.ohlcv, STEP_MS)
    ends = grid.open_time_ms[-40:]
    windows = np.stack([window_ending_at(grid.open_time_ms, grid.ohlcv, int(t), served.min_history, STEP_MS)
                        for t in ends])
    online = predict_windows(served, windows, ends)

    native = BasePredictor.load(folder / manifest.entries_for(family)["2%"].native_file)
    dataset = build_dataset(eth, (2,), 72)
    rows = np.isin(dataset.open_time_ms, ends)
    offline = native.predict_proba(native.rows_from_inputs({"sequence": dataset.sequences(rows),
                                                            "features": dataset.features[rows]}))
    assert rows.sum() == len(ends)
    np.testing.assert_allclose(online["2%"], offline, atol=1e-5)
