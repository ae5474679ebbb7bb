"""The dashboard's pages (Starlette, rendered server-side with Jinja2) and its live updates
(server-sent events). Read-only: every route is a GET. The control state and the live scores are
read on each request through the callables it is given, so this module wires no Redis itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bse_predict.control.state_machine import ControlState
from bse_predict.dashboard import views
from bse_predict.dashboard.access import TokenGate
from bse_predict.dashboard.board import Board
from bse_predict.monitoring.live_scores import LiveScores

__all__ = ["build_app"]

HERE = Path(__file__).parent
KEEP_ALIVE_S = 15.0

ReadControl = Callable[[], Awaitable[ControlState | None]]
ReadScores = Callable[[], Awaitable[dict[tuple[tuple[str, str, str, str], int], LiveScores]]]


def build_app(board: Board, changed: asyncio.Condition, read_control: ReadControl, read_scores: ReadScores,
              token: SecretStr | None) -> Starlette:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["utc"] = views.utc_text

    def page(request: Request, name: str, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, {"targets": views.TARGETS_SHOWN, **context})

    async def markets(request: Request) -> Response:
        return page(request, "markets.html", rows=views.market_rows(board), revision=board.revision)

    async def market_updates(request: Request) -> Response:
        """Rows of the symbols whose newest call changed after ``?since=`` (the page's revision), as
        rendered row HTML, one event per change of the board."""
        try:
            since = int(request.query_params.get("since", board.revision))
        except ValueError:
            raise HTTPException(400, "since must be an integer") from None
        row_template = templates.get_template("_market_row.html")

        async def stream() -> AsyncIterator[bytes]:
            seen = since
            while True:
                async with changed:  # the feed notifies under this lock, so no change slips between the two
                    rows = views.market_rows(board, seen)
                    seen = board.revision
                    if not rows:
                        try:
                            await asyncio.wait_for(changed.wait(), KEEP_ALIVE_S)
                            continue
                        except TimeoutError:
                            pass
                if not rows:  # never yield holding the lock: a slow client would stall the feed
                    yield b": keep-alive\n\n"
                    continue
                yield b"data: " + orjson.dumps([{"symbol": r["symbol"], "html": row_template.render(
                    row=r, targets=views.TARGETS_SHOWN)} for r in rows]) + b"\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def symbol(request: Request) -> Response:
        name = request.path_params["symbol"]
        state = board.symbols.get(name)
        if state is None:
            raise HTTPException(404, f"nothing of {name} is kept (no call or candle in the lookback)")
        target = request.query_params.get("target", "2%")
        if target not in views.TARGETS_SHOWN:
            raise HTTPException(400, f"target must be one of {', '.join(views.TARGETS_SHOWN)}")
        return page(request, "symbol.html", symbol=name, target=target, calls=views.call_rows(state, target),
                    chart=orjson.dumps(views.chart_data(state, target)).decode())

    async def operations(request: Request) -> Response:
        return page(request, "operations.html", state=await read_control(), events=list(board.control_events),
                    dead_letter_counts=views.dead_letter_counts(board), dead_letters=list(board.dead_letters)[:20])

    async def track_record(request: Request) -> Response:
        scores = sorted((await read_scores()).items())
        return page(request, "track_record.html", records=board.track_record.records(), live_scores=scores)

    routes = [
        Route("/", markets), Route("/updates", market_updates), Route("/symbol/{symbol}", symbol),
        Route("/operations", operations), Route("/track-record", track_record),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(TokenGate, token=token)] if token is not None else []
    return Starlette(routes=routes, middleware=middleware)
