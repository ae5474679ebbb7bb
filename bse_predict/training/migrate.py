"""``bse-predict models migrate PATH``: the previous system's pickled forests as a registry version.

The legacy format is one pickle per symbol and target, named
``rf_{SYMBOL}_{pct:.3f}_model.pkl``, each a dict with ``model`` (a scikit-learn
``RandomForestClassifier`` with two classes, up and down), ``feature_cols``
(the names of its input columns, in order), an accuracy and training fields.
The number in the name is the target as a fraction (``0.020`` = 2 %); a
number of 1 or more is read as percent (``2.000`` = 2 %).

What a migration does, all or nothing (a failed step leaves no version):

1. Reads every pickle with a restricted unpickler (:data:`LEGACY_CLASSES`: the
   classes of a scikit-learn random forest and numpy, nothing else; a pickle naming
   any other global, such as ``os.system``, is refused naming it, before it runs),
   checks the model type and its two classes, and refuses any ``feature_cols``
   name this code cannot compute (``bse_predict.features.definitions.FEATURE_NAMES``), listing the
   unknown ones.
2. Exports each forest to ONNX (skl2onnx, no ZipMap). The graph takes our full
   feature row (``features``, float32[B, 82]), gathers the legacy columns in the
   legacy order, and answers ``probabilities`` [B, 3] in the contract's
   (up, down, none) order.
3. **Three classes from two:** the legacy model only ever chose between up and
   down, so ``p_up`` and ``p_down`` are its two probabilities and ``p_none = 0``.
   Direction and confidence mean what they meant before; a "none" outcome is
   never predicted by such a version (its live log loss on those outcomes is
   the clip value, which the live metrics show honestly).
   Class labels are read as: ``"up"``/``"down"`` (any case), or numbers where
   ``1`` (or any positive) is up and ``0`` or ``-1`` is down.
4. Verifies: the native forest and the ONNX graph answer the same rows (real
   features computed by this code from generated candles) within 1e-5.
5. Writes the version: ONNX files, the originals copied under ``legacy/``
   (the source files are left untouched), a manifest marked ``legacy`` with
   the sha256 of every original, the parity per model, the legacy accuracy as
   a metric, and its changelog; signed when ``BSE_MODEL_SIGNING_SECRET`` is set.

The worker serves one model per target for every symbol. Models of every
symbol are kept (``legacy_rf_{SYMBOL}``); the one named by ``serve_symbol``
(default: BTCUSDT when present, else the first symbol) is served.
"""

from __future__ import annotations

import pickle
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from configs.settings import Settings
from bse_predict.training.onnx_parity import PARITY_TOLERANCE, check_parity
from bse_predict.errors import BsePredictError, UnsafePickle
from bse_predict.families.base import ONNX_OUTPUT
from bse_predict.families.onnx_limits import ML_OPSET, TARGET_OPSET, cap_ir_version
from bse_predict.features.definitions import FEATURE_NAMES, FEATURE_SPEC_HASH, feature_matrix
from bse_predict.features.inputs import min_history
from bse_predict.serving.manifest import LegacyOrigin, Manifest, ModelEntry, ParityReport, sha256_of
from bse_predict.integrity.restricted_pickle import FOREST_CLASSES, load_pickle
from bse_predict.serving.signals import target_label
from bse_predict.candles.synthetic import synthetic_series
from bse_predict.training.version_folder import partial_version, publish_version

__all__ = ["LEGACY_FILE", "LEGACY_CLASSES", "THREE_CLASSES", "LegacyError", "LegacyModel", "read_legacy",
           "migrate_legacy"]

LEGACY_FILE = re.compile(r"^rf_(?P<symbol>[A-Z0-9]+)_(?P<pct>\d+\.\d{3})_model\.pkl$")
LEGACY_CLASSES = FOREST_CLASSES
"""What a legacy pickle may name: its dict, lists, strings and numbers need no global; the forest
needs its trees and numpy."""
THREE_CLASSES = "binary up/down model: p_up and p_down are its probabilities, p_none = 0"
_VERIFY_HOURS = 800


class LegacyError(BsePredictError):
    """A legacy file that cannot be migrated faithfully."""


@dataclass(frozen=True, eq=False)
class LegacyModel:
    """One legacy pickle, checked: the forest, its columns and which class column is up."""

    path: Path
    symbol: str
    target_pct: float
    forest: Any
    feature_cols: tuple[str, ...]
    up_column: int
    accuracy: float | None

    @property
    def target(self) -> str:
        return target_label(self.target_pct)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Our feature rows float[B, 82] -> (up, down, none) float64[B, 3], as the legacy model answers."""
        columns = [FEATURE_NAMES.index(name) for name in self.feature_cols]
        two = self.forest.predict_proba(np.asarray(features, dtype=np.float32)[:, columns])
        out = np.zeros((len(two), 3))
        out[:, 0], out[:, 1] = two[:, self.up_column], two[:, 1 - self.up_column]
        return out


def _up_column(classes: np.ndarray, path: Path) -> int:
    names = [str(c).strip().lower() for c in classes]
    if sorted(names) == ["down", "up"]:
        return names.index("up")
    try:
        values = [float(c) for c in classes]
    except (TypeError, ValueError):
        values = []
    if len(values) == 2 and max(values) > 0 and min(values) in (0.0, -1.0):
        return int(np.argmax(values))
    raise LegacyError(f"{path.name}: classes {list(classes)} are not a binary up/down pair (up/down, 1/0 or 1/-1)")


def _target_pct(text: str) -> float:
    value = float(text)
    return value * 100.0 if value < 1.0 else value


def read_legacy(path: Path) -> LegacyModel:
    """Load and check one legacy pickle; raise :class:`LegacyError` naming what is wrong."""
    from sklearn.ensemble import RandomForestClassifier

    match = LEGACY_FILE.match(path.name)
    if match is None:
        raise LegacyError(f"{path.name} is not named rf_{{SYMBOL}}_{{pct:.3f}}_model.pkl")
    try:
        payload = load_pickle(path.read_bytes(), LEGACY_CLASSES)
    except UnsafePickle as exc:
        raise LegacyError(f"{path.name}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError) as exc:
        raise LegacyError(f"{path.name}: not a readable pickle ({exc})") from exc
    if not isinstance(payload, dict) or "model" not in payload or "feature_cols" not in payload:
        raise LegacyError(f"{path.name}: expected a dict with 'model' and 'feature_cols'")
    forest = payload["model"]
    if not isinstance(forest, RandomForestClassifier) or not hasattr(forest, "classes_"):
        raise LegacyError(f"{path.name}: 'model' is a {type(forest).__name__}, not a fitted RandomForestClassifier")
    if len(forest.classes_) != 2:
        raise LegacyError(f"{path.name}: the forest has {len(forest.classes_)} classes, not the binary up/down pair")
    feature_cols = tuple(str(c) for c in payload["feature_cols"])
    unknown = [c for c in feature_cols if c not in FEATURE_NAMES]
    if unknown:
        raise LegacyError(f"{path.name}: {len(unknown)} feature column(s) this code cannot compute: "
                          f"{', '.join(unknown[:8])}{' …' if len(unknown) > 8 else ''}")
    if forest.n_features_in_ != len(feature_cols):
        raise LegacyError(f"{path.name}: the forest reads {forest.n_features_in_} columns, feature_cols names {len(feature_cols)}")
    accuracy = payload.get("accuracy")
    return LegacyModel(path, match["symbol"], _target_pct(match["pct"]), forest, feature_cols,
                       _up_column(forest.classes_, path),
                       float(accuracy) if isinstance(accuracy, int | float) and not isinstance(accuracy, bool) else None)


def export_legacy_onnx(model: LegacyModel, path: Path) -> None:
    """The ONNX graph described in the module docstring (features -> gather -> forest -> up, down, 0)."""
    import onnx
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    proto = convert_sklearn(
        model.forest, initial_types=[("legacy_features", FloatTensorType([None, len(model.feature_cols)]))],
        options={id(model.forest): {"zipmap": False}}, target_opset={"": TARGET_OPSET, "ai.onnx.ml": ML_OPSET})
    graph = proto.graph
    for node in graph.node:
        node.output[:] = ["legacy_probabilities" if name == ONNX_OUTPUT else name for name in node.output]
    for output in [o for o in graph.output if o.name == ONNX_OUTPUT]:
        graph.output.remove(output)
    for old_input in [i for i in graph.input if i.name == "legacy_features"]:
        graph.input.remove(old_input)
    graph.input.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(FEATURE_NAMES)]))
    columns = np.array([FEATURE_NAMES.index(name) for name in model.feature_cols], dtype=np.int64)
    scatter = np.zeros((2, 3), dtype=np.float32)
    scatter[model.up_column, 0] = scatter[1 - model.up_column, 1] = 1.0
    graph.initializer.extend([helper.make_tensor("legacy_columns", TensorProto.INT64, columns.shape, columns),
                              helper.make_tensor("legacy_scatter", TensorProto.FLOAT, scatter.shape, scatter.ravel())])
    graph.node.insert(0, helper.make_node("Gather", ["features", "legacy_columns"], ["legacy_features"], axis=1))
    graph.node.append(helper.make_node("MatMul", ["legacy_probabilities", "legacy_scatter"], [ONNX_OUTPUT]))
    graph.output.append(helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, [None, 3]))
    cap_ir_version(proto)
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())


def _verification_rows() -> np.ndarray:
    """Real feature rows computed by this code, from generated candles (no data folder needed)."""
    series = synthetic_series("VERIFY", _VERIFY_HOURS, seed=11, end_ms=1_767_225_600_000)
    features = feature_matrix(series.open_time_ms, series.ohlcv)
    return features[np.isfinite(features).all(axis=1)]


def _served_symbol(models: list[LegacyModel], serve_symbol: str | None) -> str:
    symbols = sorted({m.symbol for m in models})
    chosen = serve_symbol or ("BTCUSDT" if "BTCUSDT" in symbols else symbols[0])
    if chosen not in symbols:
        raise LegacyError(f"--serve {chosen}: no legacy model for it; found {', '.join(symbols)}")
    return chosen


def migrate_legacy(source: Path, settings: Settings, version: str | None = None, serve_symbol: str | None = None,
                   progress: Callable[[str], None] = lambda _: None) -> Path:
    """Migrate every legacy pickle in ``source`` (a folder or one file) into a new version; return its folder."""
    started = time.perf_counter()
    files = sorted(source.glob("rf_*_model.pkl")) if source.is_dir() else [source]
    if not files or not all(f.is_file() for f in files):
        raise LegacyError(f"no legacy rf_{{SYMBOL}}_{{pct}}_model.pkl file in {source}")
    models = [read_legacy(path) for path in files]
    progress(f"read {len(models)} legacy model(s)")
    served = _served_symbol(models, serve_symbol)
    targets = sorted({m.target_pct for m in models})
    missing = [target_label(t) for t in targets if not any(m.symbol == served and m.target_pct == t for m in models)]
    if missing:
        raise LegacyError(f"{served} has no legacy model for target(s) {', '.join(missing)}")
    version = version or f"legacy-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    final_dir = settings.models_dir / version
    if final_dir.exists():
        raise LegacyError(f"version {version} already exists in {settings.models_dir}; versions are immutable")
    with partial_version(settings.models_dir, version, "legacy") as work_dir:
        rows = _verification_rows()
        entries, parity, metrics = [], {}, {}
        for model in models:
            name = f"legacy_rf_{model.symbol}"
            file = f"{name}_{model.target.rstrip('%')}pct.onnx"
            export_legacy_onnx(model, work_dir / file)
            parity[f"{name}/{model.target}"] = check_parity(model.predict(rows), work_dir / file,
                                                            {"features": rows.astype(np.float32)}, PARITY_TOLERANCE)
            shutil.copy2(model.path, work_dir / "legacy" / model.path.name)
            entries.append(ModelEntry(name=name, family="random_forest", target=model.target, file=file,
                                      native_file=f"legacy/{model.path.name}"))
            if model.accuracy is not None:
                metrics[f"{name}/{model.target}"] = {"legacy_accuracy": model.accuracy}
            progress(f"{model.path.name}: ONNX equals the pickle within {parity[f'{name}/{model.target}'].max_abs_diff:.1e}")
        manifest = _manifest(version, settings, models, entries, parity, metrics, served, source, final_dir,
                             work_dir, len(rows), time.perf_counter() - started)
        publish_version(manifest, work_dir, final_dir, settings)
    return final_dir


def _manifest(version: str, settings: Settings, models: list[LegacyModel], entries: list[ModelEntry],
              parity: dict[str, ParityReport], metrics: dict[str, dict[str, float]], served: str, source: Path,
              final_dir: Path, work_dir: Path, rows: int, seconds: float) -> Manifest:
    from importlib.metadata import version as package_version

    files = sorted(p for p in work_dir.rglob("*") if p.is_file())
    return Manifest(
        version=version, created_at=datetime.now(UTC), timeframe=settings.market.timeframe,
        horizon_hours=settings.market.horizon_hours, targets_pct=tuple(sorted({m.target_pct for m in models})),
        feature_names=FEATURE_NAMES, feature_spec_hash=FEATURE_SPEC_HASH, min_history=min_history({"features"}),
        data_span={}, models=tuple(entries), served_model=f"legacy_rf_{served}", metrics=metrics, parity=parity,
        files_sha256={str(p.relative_to(work_dir)): sha256_of(p) for p in files},
        library_versions={name: package_version(name) for name in ("scikit-learn", "skl2onnx", "onnx", "onnxruntime")},
        training_seconds=round(seconds, 3),
        legacy=LegacyOrigin(source=str(source.resolve()), backup=str(final_dir / "legacy"),
                            files_sha256={m.path.name: sha256_of(m.path) for m in models}, three_classes=THREE_CLASSES,
                            verified_rows=rows, max_abs_diff=max((p.max_abs_diff for p in parity.values()), default=0.0)),
    )
