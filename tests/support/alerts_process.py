"""Run the real ``bse-predict alerts`` as a subprocess, as an operator would."""

from __future__ import annotations

from bse_predict.alerts.run import READY_MESSAGE
from tests.support.worker_process import CommandProcess

__all__ = ["AlertsProcess"]


class AlertsProcess(CommandProcess):
    """``bse-predict alerts``: ready once its consumer holds partitions
    (bse_predict.alerts.run.READY_MESSAGE, logged at the first assignment). Still a log mark: the
    alerts process exposes nothing else that says so (no /metrics, no key of its own)."""

    command = "alerts"

    def ready(self) -> bool:
        return READY_MESSAGE in self.log_path.read_text(errors="replace")[self.log_offset:]
