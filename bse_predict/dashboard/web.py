"""The dashboard's pages (Starlette, rendered server-side with Jinja2) and their live updates
(server-sent events). Read-only: every route is a GET. The control state, the live scores, the
challenger test's evidence, a call's explanation and the operations page's breakers, lag and drift
(:class:`~bse_predict.dashboard.operations.OperationsSection`) come through what it is given, so this module
wires no Redis or Kafka client itself; when one of them raises
:class:`~bse_predict.dashboard.errors.SourceUnavailable` its section says so and the rest of the page is shown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

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

from bse_predict.candles.schema import Prediction
from bse_predict.control.state_machine import ControlState
from bse_predict.dashboard import track_record_view, views
from bse_predict.dashboard.access import TokenGate
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.errors import SourceUnavailable
from bse_predict.dashboard.operations import OperationsSection
from bse_predict.dashboard.periods import Period, parse_period
from bse_predict.explain.errors import ExplainError
from bse_predict.explain.explanation import Explanation
from bse_predict.monitoring.challenger_evidence import ChallengerStanding
from bse_predict.monitoring.live_scores import LiveScores

__all__ = ["build_app", "board_changes", "symbol_events", "ReadChallenger"]

HERE = Path(__file__).parent
KEEP_ALIVE_S = 15.0
SECTION_INTERVAL_S = 1.0  # a live section is sent at most once a second: a burst of outcomes is one render

T = TypeVar("T")
ReadControl = Callable[[], Awaitable[ControlState | None]]
ReadScores = Callable[[], Awaitable[dict[tuple[tuple[str, str, str, str], int], LiveScores]]]
Explain = Callable[[Prediction, str], Awaitable[Explanation]]
ReadChallenger = Callable[[str, str], Awaitable[tuple[ChallengerStanding, ...]]]
Context = Callable[[], Awaitable[dict[str, Any]]]


async def board_changes(board: Board, changed: asyncio.Condition, since: int) -> AsyncIterator[int | None]:
    """Each time the board's revision moves on from the last one seen (``since`` first): the revision seen
    before it, so the caller sends what changed after that; None after ``KEEP_ALIVE_S`` without a change."""
    seen = since
    while True:
        async with changed:  # the feed notifies under this lock, so no change slips between the two
            if board.revision == seen:
                try:
                    await asyncio.wait_for(changed.wait(), KEEP_ALIVE_S)
                except TimeoutError:
                    pass
            previous, seen = seen, board.revision
        yield None if previous == seen else previous  # never yield holding the lock: a slow client would stall the feed


async def symbol_events(board: Board, changed: asyncio.Condition, symbol: str, target: str, since: int,
                        render_calls: Callable[[list[dict[str, Any]]], str]) -> AsyncIterator[bytes]:
    """Server-sent events of the symbol page: after each change of ``symbol`` past ``since`` (a closed
    candle, a call, an outcome, a shadow call), its chart data for ``target`` and its calls rows rendered
    by ``render_calls``, at most once a ``SECTION_INTERVAL_S``; a keep-alive comment when nothing changes."""
    async for previous in board_changes(board, changed, since):
        if previous is None:
            yield b": keep-alive\n\n"
            continue
        state = board.symbols.get(symbol)
        if state is None or state.chart_at <= previous:
            continue  # another symbol changed
        calls = render_calls(views.call_rows(state, target))
        yield b"data: " + orjson.dumps({"chart": views.chart_data(state, target), "calls": calls}) + b"\n\n"
        await asyncio.sleep(SECTION_INTERVAL_S)


async def _or_unavailable(read: Callable[[], Awaitable[T]]) -> tuple[T | None, str | None]:
    try:
        return await read(), None
    except SourceUnavailable as exc:
        return None, str(exc)


def _events(stream: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _since(request: Request, board: Board) -> int:
    try:
        return int(request.query_params.get("since", board.revision))
    except ValueError:
        raise HTTPException(400, "since must be an integer") from None


def _target(request: Request) -> str:
    target = request.query_params.get("target", "2%")
    if target not in views.TARGETS_SHOWN:
        raise HTTPException(400, f"target must be one of {', '.join(views.TARGETS_SHOWN)}")
    return target


class _Pages:
    """The route handlers over one board, its change signal, the Redis reads and the explainer."""

    def __init__(self, board: Board, changed: asyncio.Condition, read_control: ReadControl, read_scores: ReadScores,
                 explain: Explain, read_challenger: ReadChallenger,
                 operations: OperationsSection | None = None) -> None:
        self._board = board
        self._operations = operations
        self._changed = changed
        self._read_control = read_control
        self._read_scores = read_scores
        self._explain = explain
        self._read_challenger = read_challenger
        self._templates = Jinja2Templates(directory=HERE / "templates")
        self._templates.env.filters["utc"] = views.utc_text
        self._sections: dict[str, tuple[str, Callable[[Request], Context]]] = {
            "operations": ("_operations.html", lambda request: self._operations_section),
            "track-record": ("_track_record.html", self._track_record_context)}

    def _page(self, request: Request, name: str, **context: Any) -> Response:
        return self._templates.TemplateResponse(request, name, {"targets": views.TARGETS_SHOWN, **context})

    async def _operations_section(self) -> dict[str, Any]:
        board = self._board
        state, state_error = await _or_unavailable(self._read_control)
        now_ms = time.time_ns() // 1_000_000
        more = {} if self._operations is None else await self._operations.parts(board, state, now_ms)
        return {"state": state, "state_error": state_error, "events": list(board.control_events),
                "dead_letter_counts": views.dead_letter_counts(board), "dead_letters": list(board.dead_letters)[:20],
                **more}

    def _track_record_context(self, request: Request) -> Context:
        """The section of the request's ``?period=`` (checked now: 400 before a stream starts)."""
        try:
            period = parse_period(request.query_params.get("period", "all"), self._board.track_record.keep_hours)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return lambda: self._track_record_section(period)

    async def _challenger(self) -> dict[str, Any]:
        """The test of the live version against the shadow, or why it cannot be shown."""
        state, error = await _or_unavailable(self._read_control)
        live, shadow = (None, None) if state is None else (state.live, state.shadow)
        if live is None or shadow is None:
            return {"error": error, "live": live, "standings": None}
        standings, error = await _or_unavailable(lambda: self._read_challenger(live, shadow))
        return {"error": error, "live": live, "shadow": shadow, "standings": standings}

    async def _track_record_section(self, period: Period) -> dict[str, Any]:
        scores, scores_error = await _or_unavailable(self._read_scores)
        return {**track_record_view.section(self._board, period),
                "live_scores": sorted((scores or {}).items()), "scores_error": scores_error,
                "challenger": await self._challenger()}

    async def markets(self, request: Request) -> Response:
        return self._page(request, "markets.html", rows=views.market_rows(self._board), revision=self._board.revision)

    async def market_updates(self, request: Request) -> Response:
        """Rows of the symbols whose newest call changed after ``?since=`` (the page's revision), as
        rendered row HTML, one event per change of the board."""
        board, since = self._board, _since(request, self._board)
        row_template = self._templates.get_template("_market_row.html")

        async def stream() -> AsyncIterator[bytes]:
            async for previous in board_changes(board, self._changed, since):
                if previous is None:
                    yield b": keep-alive\n\n"
                    continue
                rows = views.market_rows(board, previous)
                if rows:
                    yield b"data: " + orjson.dumps([{"symbol": r["symbol"], "html": row_template.render(
                        row=r, targets=views.TARGETS_SHOWN)} for r in rows]) + b"\n\n"

        return _events(stream())

    async def section_updates(self, request: Request) -> Response:
        """The live section of ``/operations`` or ``/track-record``, rendered again after the board changed
        past ``?since=``, at most once every ``SECTION_INTERVAL_S``."""
        name = request.path_params["page"]
        if name not in self._sections:
            raise HTTPException(404, f"no live section {name!r}")
        since = _since(request, self._board)
        template_name, bind = self._sections[name]
        context = bind(request)
        template = self._templates.get_template(template_name)

        async def stream() -> AsyncIterator[bytes]:
            async for previous in board_changes(self._board, self._changed, since):
                if previous is None:
                    yield b": keep-alive\n\n"
                    continue
                yield b"data: " + orjson.dumps({"html": template.render(**await context())}) + b"\n\n"
                await asyncio.sleep(SECTION_INTERVAL_S)

        return _events(stream())

    async def symbol(self, request: Request) -> Response:
        name = request.path_params["symbol"]
        state = self._board.symbols.get(name)
        if state is None:
            raise HTTPException(404, f"nothing of {name} is kept (no call or candle in the lookback)")
        target = _target(request)
        return self._page(request, "symbol.html", symbol=name, target=target, calls=views.call_rows(state, target),
                          chart=orjson.dumps(views.chart_data(state, target)).decode(), revision=self._board.revision)

    async def symbol_updates(self, request: Request) -> Response:
        """The symbol page's chart data and calls rows, sent again after each change of the symbol past
        ``?since=`` (:func:`symbol_events`)."""
        name, target, since = request.path_params["symbol"], _target(request), _since(request, self._board)
        rows = self._templates.get_template("_symbol_calls.html")
        return _events(symbol_events(self._board, self._changed, name, target, since,
                                     lambda calls: rows.render(symbol=name, target=target, calls=calls)))

    async def call(self, request: Request) -> Response:
        """One call: its answer per target with the outcomes, and the explanation of ``?target=``, computed
        now (every feature's share of the probabilities) or the reason there is none."""
        name, open_time = request.path_params["symbol"], request.path_params["open_time"]
        state = self._board.symbols.get(name)
        kept = None if state is None else state.call_at(open_time)
        if kept is None:
            raise HTTPException(404, f"no call of {name} at {open_time} is kept (calls of the last history_hours)")
        target = _target(request)
        explanation, reason = None, None
        if target not in kept.prediction.targets:
            reason = f"the call has no target {target}"
        else:
            try:
                explanation = await self._explain(kept.prediction, target)
            except (ExplainError, SourceUnavailable) as exc:
                reason = str(exc)
        shadow = None if state is None else state.shadow_at(open_time)
        return self._page(request, "call.html", symbol=name, target=target, prediction=kept.prediction,
                          time=views.utc_text(open_time), answers=views.call_targets(kept), explanation=explanation,
                          reason=reason, shadow=None if shadow is None else shadow.prediction,
                          shadow_answers=views.call_targets(shadow))

    async def operations(self, request: Request) -> Response:
        return self._page(request, "operations.html", revision=self._board.revision, **await self._operations_section())

    async def track_record(self, request: Request) -> Response:
        return self._page(request, "track_record.html", revision=self._board.revision,
                          **await self._track_record_context(request)())


def build_app(board: Board, changed: asyncio.Condition, read_control: ReadControl, read_scores: ReadScores,
              explain: Explain, token: SecretStr | None, read_challenger: ReadChallenger,
              operations: OperationsSection | None = None) -> Starlette:
    """The app; without ``operations`` the operations page leaves out the breakers, the lag and the drift."""
    pages = _Pages(board, changed, read_control, read_scores, explain, read_challenger, operations)
    routes = [
        Route("/", pages.markets), Route("/updates", pages.market_updates), Route("/updates/{page}", pages.section_updates),
        Route("/symbol/{symbol}", pages.symbol), Route("/symbol/{symbol}/call/{open_time:int}", pages.call),
        Route("/updates/symbol/{symbol}", pages.symbol_updates),
        Route("/operations", pages.operations), Route("/track-record", pages.track_record),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(TokenGate, token=token)] if token is not None else []
    return Starlette(routes=routes, middleware=middleware)
