"""``bse-predict dashboard``: the board, the feed that fills it, the pages, one uvicorn server.

The composition root of the dashboard: it wires the control state's Redis store and the live scores'
Redis reader (read-only: ``read`` is all it calls) to the pages. Binding to an address other hosts can
reach needs ``BSE_DASHBOARD_TOKEN``. uvicorn's access log is off: a ``?token=`` would be written to it."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from configs.dashboard import is_loopback
from configs.settings import Settings
from bse_predict.connections.clients import connect_redis
from bse_predict.control.state_store import RedisControlStore
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.feed import Feed
from bse_predict.dashboard.web import build_app
from bse_predict.monitoring.metrics import RedisLiveScores

__all__ = ["check_binding", "serve", "run_dashboard"]

log = logging.getLogger(__name__)


def check_binding(settings: Settings, host: str) -> None:
    if not is_loopback(host) and settings.dashboard.token is None:
        raise ValueError(f"--host {host} is reachable from other machines: set BSE_DASHBOARD_TOKEN first "
                         "(or bind to 127.0.0.1)")


async def serve(settings: Settings, host: str, port: int, loglevel: str) -> None:
    check_binding(settings, host)
    board = Board(settings.dashboard)
    changed = asyncio.Condition()
    feed = Feed(settings, board, changed)
    control = RedisControlStore.connect(settings)
    scores_client = connect_redis(settings)
    scores = RedisLiveScores(scores_client, settings)
    app = build_app(board, changed, control.read, scores.read, settings.dashboard.token)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=loglevel.lower(), access_log=False,
                                           lifespan="off"))
    feeding = asyncio.create_task(feed.run())
    feeding.add_done_callback(lambda _: setattr(server, "should_exit", True))  # no feed, no dashboard
    log.info("dashboard on http://%s:%d (%s)", host, port,
             "token required" if settings.dashboard.token is not None else "no token: this host only")
    try:
        await server.serve()
    finally:
        if not feeding.done():
            feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        await control.close()
        await scores_client.aclose()
    if feeding.done() and not feeding.cancelled() and feeding.exception() is not None:
        raise feeding.exception()  # type: ignore[misc]


def run_dashboard(settings: Settings, host: str, port: int, loglevel: str) -> None:
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings, host, port, loglevel))
