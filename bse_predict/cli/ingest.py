"""``bse-predict ingest``: live klines from the exchange into the candles topic."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from bse_predict.cli.shared import ConfigOption, command_settings, console, one_line_errors

__all__ = ["ingest"]


@one_line_errors
def ingest(
    config: ConfigOption = None,
    market: Annotated[str | None, typer.Option(
        "--market", help="spot or futures (USDT-M perpetuals); default: ingest.market.")] = None,
    symbols: Annotated[str | None, typer.Option(
        "--symbols", help="Comma-separated, e.g. BTCUSDT,ETHUSDT; default: ingest.symbols, or every trading "
                          "USDT market of exchangeInfo.")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="error, warning, info or debug.")] = "info",
) -> None:
    """Live klines from Binance into the candles topic: WebSocket streams, REST backfill after every reconnect."""
    from bse_predict.connections.clients import explained_kafka_errors
    from bse_predict.ingest.service import Ingest

    settings = command_settings(config)
    chosen = market or settings.ingest.market
    if chosen not in ("spot", "futures"):
        raise ValueError(f"--market must be spot or futures, got {chosen!r}")
    names = tuple(s.strip().upper() for s in (symbols or "").split(",") if s.strip())
    if any(not s.isalnum() for s in names):
        raise ValueError(f"--symbols must be symbols like BTCUSDT separated by commas, got {symbols!r}")
    level = getattr(logging, loglevel.upper(), None)
    if not isinstance(level, int):
        raise ValueError(f"--loglevel must be error, warning, info or debug, got {loglevel!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        report = await Ingest(settings, chosen, names).run(stop)  # type: ignore[arg-type]
        console.print(f"ingest stopped: {report.closed} closed candles and {report.updates} updates of "
                      f"{len(report.symbols)} symbols, {len(report.gaps)} exchange gaps reported")

    with explained_kafka_errors(settings):
        asyncio.run(run())
