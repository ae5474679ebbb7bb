"""Thread limits for the small dense fits of the evaluation."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

__all__ = ["single_threaded_blas"]


def single_threaded_blas() -> AbstractContextManager[Any]:
    """One BLAS thread for a small lbfgs fit (the logistic baseline, Platt calibration).

    On this 2-core machine OpenBLAS's two threads made a 27,000-row, 82-feature
    multinomial logistic regression 20 times slower than one thread (14 s against
    0.7 s, same 82 iterations). Only the evaluation's own fits are limited; the
    families keep their threading.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
