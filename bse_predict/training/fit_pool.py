"""Independent fits run side by side in worker processes, one progress bar per fit.

A training run is a list of (family, target) fits that share nothing but their inputs, so
:func:`run_fits` hands them to ``workers`` processes (``spawn``ed: the parent's threads, such
as the progress display's, are never forked). Each worker receives the shared inputs once
(the pool's initializer) and runs one fit at a time with BLAS and OpenMP capped at one
thread, so that two workers on two cores do not fight over them; ``workers`` 1 runs every
fit in this process under the same cap. A fit depends only on its inputs and its seed,
so the results are the same whatever the number of workers, and they come back in the
order of ``tasks`` whatever order the fits finish in.

Each fit reports its stages (``report(stage)``); a worker's reports reach the parent over
a queue and advance that fit's bar.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rich.progress import Progress, TaskID

__all__ = ["FIT_STAGES", "FitTask", "run_fits"]

FIT_STAGES = ("fit", "export, parity and holdout")
"""What a fit reports, in order; its bar advances one step after each."""
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_POLL_SECONDS = 0.2
_DONE = "done"

C = TypeVar("C")
R = TypeVar("R")
Report = Callable[[str], None]


@dataclass(frozen=True)
class FitTask:
    family: str
    target: str

    @property
    def label(self) -> str:
        return f"{self.family} {self.target}"


@dataclass(frozen=True)
class _Worker(Generic[C, R]):
    fit: Callable[[C, FitTask, Report], R]
    context: C
    reports: Any  # a multiprocessing queue of (task index, stage)


_WORKER: _Worker[Any, Any] | None = None
"""The inputs of this worker process (set once by the pool's initializer)."""


def _one_thread() -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _start_worker(worker: _Worker[Any, Any]) -> None:
    global _WORKER
    for name in _THREAD_VARIABLES:  # read by OpenMP runtimes that load later (scikit-learn, XGBoost)
        os.environ[name] = "1"
    _one_thread()  # the libraries loaded already (numpy's BLAS): kept for the process's life
    _WORKER = worker


def _run_in_worker(index: int, task: FitTask) -> Any:
    assert _WORKER is not None, "the pool's initializer sets the worker's inputs"
    reports = _WORKER.reports
    return _WORKER.fit(_WORKER.context, task, lambda stage: reports.put((index, stage)))


def run_fits(fit: Callable[[C, FitTask, Report], R], context: C, tasks: Sequence[FitTask], workers: int,
             progress: Progress, submit_order: Sequence[int] | None = None) -> list[R]:
    """``fit(context, task, report)`` for every task, in ``workers`` processes (1: in this one);
    the results in the order of ``tasks``. ``submit_order`` (indices of ``tasks``) starts the
    longest fits first so the last ones to finish are short. ``fit`` must be a module-level
    function and ``context`` picklable when ``workers`` > 1."""
    bars = [progress.add_task(f"{task.label}: waiting", total=len(FIT_STAGES), start=False) for task in tasks]
    order = list(submit_order) if submit_order is not None else list(range(len(tasks)))
    reporters = [_reporter(progress, bar, task) for bar, task in zip(bars, tasks, strict=True)]
    if workers <= 1 or len(tasks) <= 1:
        results = {}
        with _one_thread():
            for i in order:
                results[i] = fit(context, tasks[i], reporters[i])
                reporters[i](_DONE)
        return [results[i] for i in range(len(tasks))]
    spawn = multiprocessing.get_context("spawn")
    reports = spawn.Queue()
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=spawn, initializer=_start_worker,
                             initargs=(_Worker(fit, context, reports),)) as pool:
        futures = {i: pool.submit(_run_in_worker, i, tasks[i]) for i in order}
        try:
            _follow(futures, reports, reporters)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [futures[i].result() for i in range(len(tasks))]


def _follow(futures: dict[int, Future[Any]], reports: Any, reporters: list[Report]) -> None:
    """Advance the bars from the workers' reports until every fit is done; a failed fit raises."""
    index_of = {future: i for i, future in futures.items()}
    finished: set[int] = set()
    pending = set(futures.values())
    while pending:
        done, pending = wait(pending, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
        _drain(reports, reporters, finished)
        for future in done:
            future.result()
            finished.add(index_of[future])
            reporters[index_of[future]](_DONE)


def _drain(reports: Any, reporters: list[Report], finished: set[int]) -> None:
    """The reports that have arrived; a late one for a finished fit is dropped."""
    while True:
        try:
            index, stage = reports.get_nowait()
        except queue.Empty:
            return
        if index not in finished:
            reporters[index](stage)


def _reporter(progress: Progress, bar: TaskID, task: FitTask) -> Report:
    """A fit's report: the stage it is entering (its bar shows the stages before it complete)."""
    def report(stage: str) -> None:
        progress.start_task(bar)  # its clock runs from the first stage: the time it waited is not its own
        started = FIT_STAGES.index(stage) if stage in FIT_STAGES else len(FIT_STAGES)
        progress.update(bar, completed=started, description=f"{task.label}: {stage}")

    return report
