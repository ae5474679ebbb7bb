"""Unpickling that admits only the classes named in an allow-list.

Two formats this project still reads are pickles: the previous system's forests
(``bse-predict models migrate``) and the native model kept beside each ONNX file
(``--engine native``, re-export, parity). A pickle names any callable it likes
(``os.system``, ``builtins.exec``) for the unpickler to call while it loads, so a
bare ``pickle.load`` runs whatever the file says. Here every global the stream
names goes through ``find_class``, which admits only exact ``(module, name)``
pairs: no module prefixes (a listed module would open everything it imports) and
no dotted names. A refused name raises :class:`~bse_predict.errors.UnsafePickle` before
its module is even imported, so nothing of the file has run.

What a listed class does while it is rebuilt (its constructor arguments,
``__setstate__``) is still its own code: list only classes rebuilt from plain data
(arrays, trees, our predictors).

joblib files (the native format) are pickles whose arrays follow their
``NumpyArrayWrapper`` as raw bytes; :func:`load_joblib` reads them with joblib's own
unpickler under the same allow-list. An object array there is a nested pickle that
older joblib releases read with a bare ``pickle.load``: it is refused whatever the
joblib version (no native model holds one).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from bse_predict.errors import UnsafePickle

__all__ = ["AllowList", "NUMPY_CLASSES", "FOREST_CLASSES", "MOVED_MODULES", "load_pickle", "load_joblib"]

AllowList = frozenset[tuple[str, str]]

NUMPY_CLASSES: AllowList = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    # the same two under numpy 1.x's name, which pickles written before numpy 2 carry
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    # pickle protocol 5 (out-of-band buffers; the default from Python 3.14): an array from its bytes
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    # protocols 0-2 spell a bytes object as _codecs.encode(text, "latin1")
    ("_codecs", "encode"),
})
"""Arrays, dtypes and numpy scalars: rebuilt from shapes, type codes and bytes."""

FOREST_CLASSES: AllowList = NUMPY_CLASSES | {
    ("sklearn.ensemble._forest", "RandomForestClassifier"),
    ("sklearn.tree._classes", "DecisionTreeClassifier"),
    ("sklearn.tree._tree", "Tree"),
}
"""A fitted scikit-learn random forest: its trees, their node arrays, and numpy."""

_JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")

MOVED_MODULES: dict[str, str] = {
    "models.families.ensemble": "bse_predict.families.ensemble",
    "models.families.hmm_regime": "bse_predict.families.hmm_regime",
    "models.families.lorentzian_knn": "bse_predict.families.lorentzian_knn",
    "models.families.lstm": "bse_predict.families.lstm",
    "models.families.random_forest": "bse_predict.families.random_forest",
    "models.families.regime_hybrid": "bse_predict.families.regime_hybrid",
    "models.families.xgboost_family": "bse_predict.families.xgboost_family",
    "models.ensemble": "bse_predict.ensembles.combiners",
    "models.regimes": "bse_predict.families.regime_model",
    "bse_predict.families.regimes": "bse_predict.families.regime_model",
}
"""Where this project's own classes live now, for native files written before the modules moved
(the module a pickle names is where the class lived when it was written)."""


def _admit(module: str, name: str, allowed: AllowList) -> str:
    """The module to import ``name`` from: ``module``, or its new home; refused unless allowed."""
    module = MOVED_MODULES.get(module, module)
    if (module, name) not in allowed:
        raise UnsafePickle(f"refused to unpickle {module}.{name}: not one of the {len(allowed)} classes "
                           f"this file may hold")
    return module


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: AllowList) -> None:
        super().__init__(io.BytesIO(data))
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_admit(module, name, self._allowed), name)


def load_pickle(data: bytes, allowed: AllowList) -> Any:
    """The object pickled in ``data``, built only from ``allowed`` globals."""
    return _RestrictedUnpickler(data, allowed).load()


def load_joblib(data: bytes, allowed: AllowList) -> Any:
    """The object ``joblib.dump`` wrote (uncompressed) in ``data``, built only from ``allowed``
    globals and joblib's array wrapper."""
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class _RestrictedJoblibUnpickler(NumpyUnpickler):  # type: ignore[misc]
        dispatch = NumpyUnpickler.dispatch.copy()

        def __init__(self) -> None:
            super().__init__("", io.BytesIO(data), ensure_native_byte_order=True)
            self._allowed = allowed | {_JOBLIB_WRAPPER}

        def find_class(self, module: str, name: str) -> Any:
            return super().find_class(_admit(module, name, self._allowed), name)

        def load_build(self) -> None:
            state, target = self.stack[-1], self.stack[-2]
            if isinstance(target, NumpyArrayWrapper) and getattr(
                    state.get("dtype") if isinstance(state, dict) else None, "hasobject", True):
                raise UnsafePickle("refused to unpickle an object array: joblib stores it as a nested pickle")
            NumpyUnpickler.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build

    return _RestrictedJoblibUnpickler().load()
