"""``bse-predict retrain``: one retrain on the archive (train, gate against the live version, shadow), or
with ``--schedule`` the scheduler that retrains on its cron schedule and on drift or degradation events."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bse_predict.cli.shared import ConfigOption, command_settings, console, errors, one_line_errors

__all__ = ["retrain"]


def _say(line: str) -> None:
    errors.print(line, markup=False, highlight=False)


@one_line_errors
def retrain(
    config: ConfigOption = None,
    schedule: Annotated[bool, typer.Option(
        "--schedule", help="Run as the scheduler: retrain.schedule (cron, UTC) and retrain.triggers from "
                           "control.events, at most once per retrain.min_interval_hours; stop with Ctrl-C.")] = False,
    archive: Annotated[list[Path] | None, typer.Option(
        "--archive", help="Candle files or directories to train on (repeatable; default: retrain.archive).")] = None,
) -> None:
    """Train a new version on the newest retrain.months of the archive, gate it against the live version on
    the newest purged holdout, and only if it is not significantly worse send the signed shadow message; the
    challenger test then promotes or drops it. Every step goes on control.events. Exits 2 with the reason
    when the retrain fails (the fleet is then left as it was)."""
    import asyncio
    import signal

    from bse_predict.connections.clients import explained_kafka_errors
    from bse_predict.retrain.run import retrain_once
    from bse_predict.retrain.scheduler import run_scheduler

    settings = command_settings(config, families=True)
    if archive:
        settings = settings.model_copy(update={"retrain": settings.retrain.model_copy(
            update={"archive": tuple(str(p) for p in archive)})})
    with explained_kafka_errors(settings):
        if not schedule:
            result = asyncio.run(retrain_once(settings, progress=_say, show_progress=True))
            console.print(f"retrain {result.version}: shadowed; pruned {', '.join(result.pruned) or 'nothing'}",
                          markup=False, highlight=False)
            return

        async def scheduler() -> int:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            return await run_scheduler(settings, stop, progress=_say, show_progress=True)

        started = asyncio.run(scheduler())
        console.print(f"retrain scheduler stopped after {started} retrains", markup=False, highlight=False)
