"""``bse-predict alerts``: the Telegram alert service."""

from __future__ import annotations

from typing import Annotated

import typer

from bse_predict.cli.shared import ConfigOption, command_settings, one_line_errors

__all__ = ["alerts"]


@one_line_errors
def alerts(
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Telegram alerts, follow-ups, digests and daily summaries from the predictions and outcomes topics.

    Needs TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID (several chats: comma-separated); see docs/alerts.md."""
    from bse_predict.alerts.run import run_alerts

    if loglevel.lower() not in ("critical", "error", "warning", "info", "debug"):
        raise ValueError(f"--loglevel must be critical, error, warning, info or debug, got {loglevel!r}")
    run_alerts(command_settings(config), loglevel)
