"""The interface every model family implements, and the registry that finds them.

The scikit-learn estimator contract: ``__init__`` only stores
hyperparameters (explicit keyword arguments, a ``seed`` among them), fitted
state ends in ``_``, and :meth:`get_hyperparameters` reads the constructor's
signature back. Every family answers three classes in the order of
:data:`bse_predict.labels.first_touch.CLASS_NAMES` (up, down, none) and exports ONNX with one
float32 input named after its :attr:`input_kind` and one output
``probabilities`` of shape [batch, 3], so the worker serves any family the
same way. A family that reads several inputs (the regime hybrid) names them in
:attr:`input_kinds`, takes its rows as :class:`bse_predict.features.inputs.InputRows`, and
overrides :meth:`onnx_feed` and :meth:`rows_from_inputs`.

A family that must skip a check of the shared suite says which and why in
:attr:`skipped_checks`.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from configs.settings import Settings, SignalThresholds
from bse_predict.training.dataset import SymbolDataset
from bse_predict.errors import UnsafePickle
from bse_predict.features.inputs import InputRows
from bse_predict.labels.first_touch import UNKNOWN
from bse_predict.evaluation.holdout_metrics import holdout_metrics
from bse_predict.explain.contributions import Contributions
from bse_predict.explain.errors import NotExplainable
from bse_predict.features.definitions import FEATURE_NAMES
from bse_predict.integrity.restricted_pickle import FOREST_CLASSES, AllowList, load_joblib
from bse_predict.candles.schema import TargetPrediction
from bse_predict.serving.signals import target_predictions

__all__ = ["BasePredictor", "InputKind", "register", "get_model", "list_models", "native_classes", "UnknownFamily",
           "ONNX_OUTPUT", "check_family_params", "InvalidFamilyParams", "validation_split", "early_stopping_split",
           "tabular_column_names"]

InputKind = Literal["features", "sequence"]
ONNX_OUTPUT = "probabilities"


class UnknownFamily(KeyError):
    """A family name that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidFamilyParams(ValueError):
    """A ``models.families`` block naming a family that is not registered, or a parameter its constructor
    does not take."""


class BasePredictor(ABC):
    """One model family for one target: features (or sequences) in, (up, down, none) out."""

    family: ClassVar[str]
    input_kind: ClassVar[InputKind] = "features"
    skipped_checks: ClassVar[dict[str, str]] = {}
    fast_params: ClassVar[dict[str, Any]] = {}
    """Hyperparameters small enough for the shared check suite and smoke runs."""
    uses_validation: ClassVar[bool] = False
    """True when ``train`` stops early on ``validation_data``: callers that pool symbols must
    pass a time-based, purged validation set (a tail of pooled rows is one symbol's tail)."""
    uses_validation_times: ClassVar[bool] = False
    """True when ``train`` also takes ``validation_open_time_ms``, the open times of the validation
    rows (the ensemble cuts its inner folds by time)."""
    calibrates_itself: ClassVar[bool] = False
    """True when the family's answer is already fitted by log loss on rows its models never saw (the
    ensemble's combiners, with a climatology member): the evaluation scores it as served, without a
    calibrator fitted on yet another slice."""

    # ------------------------------------------------------------ data
    @property
    def input_kinds(self) -> tuple[str, ...]:
        """The ONNX inputs this family's graph reads, each a kind of :mod:`bse_predict.features.inputs`."""
        return (self.input_kind,)

    def onnx_feed(self, X: np.ndarray | InputRows) -> dict[str, np.ndarray]:
        """Rows as ``prepare_data`` returns them -> the exported graph's inputs (float32)."""
        return {self.input_kind: np.ascontiguousarray(X, dtype=np.float32)}

    def rows_from_inputs(self, inputs: dict[str, np.ndarray]) -> np.ndarray | InputRows:
        """The worker's inputs by kind -> rows as :meth:`predict_proba` takes them."""
        return inputs[self.input_kind]

    def prepare_data(self, dataset: SymbolDataset, target: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows of one symbol with a known label, as this family's input kind:
        (features float64[n, F] or sequences float32[n, 168, 4], labels int[n])."""
        labels = dataset.labels[target]
        known = labels != UNKNOWN
        inputs = dataset.sequences(known) if self.input_kind == "sequence" else dataset.features[known]
        return inputs, labels[known].astype(np.int64)

    # ------------------------------------------------------------ learning
    @abstractmethod
    def train(self, X: np.ndarray, y: np.ndarray,
              validation_data: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
        """Fit; return training metrics (those of ``validation_data`` when given)."""

    @abstractmethod
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """float64[n, 3], columns up, down, none, rows summing to 1."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)

    def validate(self, X: np.ndarray, y: np.ndarray, reference_labels: np.ndarray | None = None) -> dict[str, float]:
        """Log loss, Brier (and skill against the climatology of ``reference_labels``,
        default ``y``), accuracy beside its base rate, AUC of up against down."""
        return holdout_metrics(self.predict_proba(X), y, y if reference_labels is None else reference_labels)

    def get_feature_importance(self) -> dict[str, float]:
        """Importance per input column (empty when the family has no notion of it)."""
        return {}

    def contributions(self, X: np.ndarray) -> Contributions:
        """Each input column's additive share of :meth:`predict_proba` for each row
        (:mod:`bse_predict.explain.contributions`). Tree families answer; the others raise
        :class:`~bse_predict.explain.errors.NotExplainable` and skip the suite's ``additivity`` check."""
        raise NotExplainable(f"family {self.family!r} has no per-feature contributions: not a tree family")

    def get_hyperparameters(self) -> dict[str, Any]:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def generate_signals(self, X: np.ndarray, thresholds: SignalThresholds) -> list[TargetPrediction]:
        return target_predictions(self.predict_proba(X), thresholds)

    # ------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """The native model, kept to re-export and compare; never served."""
        import joblib

        joblib.dump(self, path)

    @classmethod
    def load(cls, path: Path) -> BasePredictor:
        return cls.from_bytes(path.read_bytes(), path.name)

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> BasePredictor:
        """The predictor :meth:`save` wrote, unpickled admitting only :func:`native_classes` (the
        file is a pickle: a bare ``joblib.load`` would run whatever it names)."""
        try:
            loaded = load_joblib(data, native_classes())
        except UnsafePickle as exc:
            raise UnsafePickle(f"{source}: {exc}") from None
        if not isinstance(loaded, cls):
            raise TypeError(f"{source} holds a {type(loaded).__name__}, not a {cls.__name__}")
        return loaded

    @abstractmethod
    def export_onnx(self, path: Path) -> None:
        """Write an ONNX graph: input ``self.input_kind`` (float32), output ``probabilities`` [batch, 3]."""

    def clone(self) -> BasePredictor:
        """A new, unfitted predictor with the same hyperparameters."""
        return type(self)(**self.get_hyperparameters())


def tabular_column_names(width: int) -> tuple[str, ...]:
    """The names of a tree family's input columns: :data:`FEATURE_NAMES` when there are that many,
    else ``f0``, ``f1``, ... (a model trained on other columns)."""
    return FEATURE_NAMES if width == len(FEATURE_NAMES) else tuple(f"f{i}" for i in range(width))


def validation_split(n_rows: int, validation_fraction: float, purge_rows: int) -> tuple[slice, slice | None]:
    """(training rows, validation rows) of ``n_rows`` rows in time order: the newest
    ``validation_fraction`` validates, the ``purge_rows`` rows before it are dropped
    (their labels reach into the validation hours), all earlier rows train."""
    if validation_fraction <= 0:
        return slice(0, n_rows), None
    n_validation = max(1, int(round(n_rows * validation_fraction)))
    n_fit = n_rows - n_validation - purge_rows
    if n_fit < n_validation:
        raise ValueError(f"{n_rows} rows are too few to hold out {n_validation} validation rows behind a purge of "
                         f"{purge_rows}; pass validation_data or lower validation_fraction")
    return slice(0, n_fit), slice(n_rows - n_validation, n_rows)



def early_stopping_split(X: np.ndarray, y: np.ndarray, validation_data: tuple[np.ndarray, np.ndarray] | None,
                         early_stopping_rounds: int | None, validation_fraction: float, purge_rows: int,
                         ) -> tuple[int, tuple[np.ndarray, np.ndarray] | None]:
    """A boosted family's rows: how many leading rows of ``X`` train, and the validation slice that early
    stopping watches (``validation_data`` when given; None: no early stopping)."""
    if validation_data is not None:
        return len(X), validation_data
    if not early_stopping_rounds:
        return len(X), None
    fit, held = validation_split(len(X), validation_fraction, purge_rows)
    return fit.stop, None if held is None else (X[held], y[held])

P = TypeVar("P", bound=type[BasePredictor])
_REGISTRY: dict[str, type[BasePredictor]] = {}


def register(cls: P) -> P:
    """Class decorator: make a family available under ``cls.family``; names are unique."""
    name = getattr(cls, "family", None)
    if not name:
        raise TypeError(f"{cls.__name__} must set the class attribute 'family'")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"family {name!r} is already registered by {_REGISTRY[name].__name__}")
    if not issubclass(cls, BasePredictor) or inspect.isabstract(cls):
        raise TypeError(f"{cls.__name__} must implement every abstract method of BasePredictor")
    _REGISTRY[name] = cls
    return cls


_LIBRARY_CLASSES = FOREST_CLASSES | {("xgboost.core", "Booster"), ("builtins", "bytearray"),
                                     ("lightgbm.basic", "Booster")}
"""What the families' fitted state holds: forests, XGBoost boosters (their state is a bytearray), LightGBM
boosters (their state is the model text and a dict of plain values), numpy."""
_STATE_CLASSES = frozenset({("bse_predict.ensembles.combiners", "StackingCombiner"),
                            ("bse_predict.families.regime_model", "RegimeModel")})
"""Our own state objects a family keeps (the ensemble's stacking, the regime models)."""


def native_classes() -> AllowList:
    """Every class a native model file may name: the registered families, the state objects they
    keep and the library classes inside those. A family that keeps a new kind of object fails the
    contract suite's save/load check, naming the class, until it is listed here."""
    families = {(family.__module__, family.__qualname__) for family in _REGISTRY.values()}
    return _LIBRARY_CLASSES | _STATE_CLASSES | families


def get_model(name: str, **config: Any) -> BasePredictor:
    try:
        family = _REGISTRY[name]
    except KeyError:
        raise UnknownFamily(f"unknown model family {name!r}; known: {', '.join(list_models())}") from None
    return family(**config)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def check_family_params(settings: Settings) -> None:
    """Every block of ``models.families`` (enabled or not: ``params`` and each ``per_target`` override)
    against its family's constructor, so that a misspelt hyperparameter stops the command at start-up
    rather than when training reaches the family. A hybrid's ``base_params`` are checked against its base
    family, an ensemble's ``member_params`` against each member. Raises :class:`InvalidFamilyParams`
    naming the block, the family, the unknown parameters and the known ones. The settings cannot do it
    themselves: they import nothing of the project."""
    importlib.import_module("bse_predict.families")  # every family module registers itself on import
    for name, config in settings.models.families.items():
        where = f"models.families.{name}"
        family = _family_class(name, where)
        _check_params(family, config.params, f"{where}.params")
        for target, params in config.per_target.items():
            _check_params(family, params, f"{where}.per_target.{target}")


def _family_class(name: str, where: str) -> type[BasePredictor]:
    if name not in _REGISTRY:
        raise InvalidFamilyParams(f"{where}: unknown model family {name!r}; known: {', '.join(list_models())}")
    return _REGISTRY[name]


def _check_params(family: type[BasePredictor], params: dict[str, Any], where: str) -> None:
    signature = inspect.signature(family.__init__).parameters
    known = [p for p, spec in signature.items() if p != "self" and spec.kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = [p for p in params if p not in known]
    if unknown and not any(spec.kind is inspect.Parameter.VAR_KEYWORD for spec in signature.values()):
        raise InvalidFamilyParams(f"{where}: family {family.family!r} has no parameter "
                                  f"{', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    base = getattr(family, "base_family", None)
    if base is not None and isinstance(params.get("base_params"), dict):
        _check_params(_family_class(base, f"{where}.base_params"), params["base_params"], f"{where}.base_params")
    if isinstance(params.get("member_params"), dict):
        for member, member_params in params["member_params"].items():
            _check_params(_family_class(member, f"{where}.member_params"), member_params or {},
                          f"{where}.member_params.{member}")
