"""What a user sees while training stays free of library noise: TensorFlow's C++ start-up lines
(absl's "before InitializeLog", oneDNN, CPU features) and its node warnings never reach the terminal."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_NOISE = re.compile(r"^[IWEF]\d{4} |absl::|oneDNN|cpu_feature_guard|node_def_util|retracing", re.MULTILINE)

_FIT_AND_EXPORT = textwrap.dedent("""
    import sys
    import numpy as np
    from bse_predict.families.lstm import LSTMPredictor
    from bse_predict.features.sequences import SEQUENCE_FIELDS

    rng = np.random.default_rng(0)
    params = {**LSTMPredictor.fast_params, "sequence_length": 168}
    model = LSTMPredictor(**params)
    X = rng.normal(size=(300, 168, len(SEQUENCE_FIELDS))).astype(np.float32)
    y = rng.integers(0, 3, 300)
    model.train(X, y)
    model.export_onnx(sys.argv[1])
    print("trained and exported")
""")


def test_fitting_and_exporting_the_lstm_writes_no_library_noise(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _FIT_AND_EXPORT, str(tmp_path / "lstm.onnx")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained and exported" in done.stdout and (tmp_path / "lstm.onnx").stat().st_size > 0
    noise = _NOISE.findall(done.stdout + done.stderr)
    assert not noise, f"library noise reached the user: {noise}\n{done.stderr[-2000:]}"
