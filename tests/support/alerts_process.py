"""Run the real ``bse-predict alerts`` as a subprocess, as an operator would."""

from __future__ import annotations

from tests.support.worker_process import CommandProcess

__all__ = ["AlertsProcess"]


class AlertsProcess(CommandProcess):
    """``bse-predict alerts``: ready once its consumer holds partitions
    (bse_predict.alerts.run.READY_MESSAGE, logged at the first assignment)."""

    command = "alerts"
    ready_mark = "alerts ready"
