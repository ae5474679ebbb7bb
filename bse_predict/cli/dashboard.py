"""``bse-predict dashboard``: the read-only web pages (docs/dashboard.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from bse_predict.cli.shared import ConfigOption, command_settings, one_line_errors

__all__ = ["dashboard"]


@one_line_errors
def dashboard(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default dashboard.host, 127.0.0.1); "
                                                            "another than a loopback one needs BSE_DASHBOARD_TOKEN.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default dashboard.port, 8050).")] = None,
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Serve the web dashboard: markets, each symbol's chart with its calls and outcomes, each call's
    explanation (computed when opened), operations (control state, control events, dead letters) and the
    track record; markets, operations and track record update live. Read-only; reads the topics from
    dashboard.lookback_hours back, and from Redis the control state, the live scores and the worker's
    candle windows."""
    if loglevel.lower() not in ("critical", "error", "warning", "info", "debug"):
        raise ValueError(f"--loglevel must be critical, error, warning, info or debug, got {loglevel!r}")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"--port must be 1 to 65535, got {port}")
    settings = command_settings(config)
    from bse_predict.dashboard.run import run_dashboard

    run_dashboard(settings, host or settings.dashboard.host, port or settings.dashboard.port, loglevel)
