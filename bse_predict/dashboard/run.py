"""``bse-predict dashboard``: the board, the feed that fills it, the pages, one uvicorn server.

The composition root of the dashboard: it wires the Redis reads (the control state, the live scores,
the worker's candle windows, the drift counts, the challenger test's evidence; read-only, on one client
whose calls fail within ``control.io_timeout_s``), the worker group's lag (Kafka, within the same timeout)
and the on-demand explanations (the versions' native models in ``BSE_MODELS_DIR``) to the pages. Once the
feed has read the lookback, the objects it left are frozen out of the garbage collector's way
(:func:`freeze_after_lookback`).
Binding to an address other hosts can reach needs ``BSE_DASHBOARD_TOKEN``. uvicorn's access log is off: a
``?token=`` would be written to it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple, ParamSpec, TypeVar

import redis.asyncio as aioredis
import uvicorn
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from configs.dashboard import is_loopback
from configs.settings import Settings
from bse_predict.connections.clients import connect_redis, redacted_url
from bse_predict.heap import freeze_long_lived
from bse_predict.control.state_store import RedisControlStore
from bse_predict.dashboard.board import Board
from bse_predict.dashboard.consumer_lag import KafkaLag
from bse_predict.dashboard.errors import SourceUnavailable
from bse_predict.dashboard.explanations import OnDemandExplanations, ReadCandles
from bse_predict.dashboard.feed import Feed
from bse_predict.dashboard.operations import OperationsSection
from bse_predict.errors import ManifestError
from bse_predict.dashboard.web import ReadChallenger, ReadControl, ReadScores, build_app
from bse_predict.explain.explainer import Explainer
from bse_predict.monitoring.challenger_store import RedisChallengerEvidence
from bse_predict.monitoring.drift_counts import DriftCounts
from bse_predict.monitoring.metrics import RedisLiveScores
from bse_predict.serving.servable import newest_servable_version
from bse_predict.stream.window_store import RedisWindowStore

__all__ = ["RedisReads", "check_binding", "redis_reads", "operations_section", "freeze_after_lookback", "serve",
           "run_dashboard"]

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)

EXPLAIN_TIMEOUT_S = 10.0  # a first explanation of a version loads its native models: seconds, not minutes


def check_binding(settings: Settings, host: str) -> None:
    if not is_loopback(host) and settings.dashboard.token is None:
        raise ValueError(f"--host {host} is reachable from other machines: set BSE_DASHBOARD_TOKEN first "
                         "(or bind to 127.0.0.1)")


class RedisReads(NamedTuple):
    """What the pages read from Redis, each read guarded by :func:`_guard_redis`."""

    control: ReadControl
    scores: ReadScores
    candles: ReadCandles
    challenger: ReadChallenger


def _guard_redis(read: Callable[P, Awaitable[T]], what: str, settings: Settings) -> Callable[P, Awaitable[T]]:
    """``read``, whose Redis failure (an error, or no answer within the client's timeout) becomes
    :class:`~bse_predict.dashboard.errors.SourceUnavailable`, which a page shows in place of the section."""
    where = redacted_url(settings.redis_url)

    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await read(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise SourceUnavailable(f"Redis at {where} did not answer for the {what} "
                                    f"({type(exc).__name__}: {exc})") from exc

    return guarded


def redis_reads(settings: Settings) -> tuple[aioredis.Redis, RedisReads]:
    """One client whose calls fail within ``control.io_timeout_s``, not retried inside it (a page must not
    wait on a Redis that is down), and the reads on it: the control state, the live scores, the worker's
    candle windows, the challenger test's evidence."""
    timeout_s = settings.control.io_timeout_s
    client = connect_redis(settings, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                           retry=Retry(NoBackoff(), 0))
    windows = RedisWindowStore(client, settings.window.retain_candles, key_prefix=settings.topic_prefix)
    return client, RedisReads(
        _guard_redis(RedisControlStore(client, key_prefix=settings.topic_prefix).read, "control state", settings),
        _guard_redis(RedisLiveScores(client, settings).read, "live scores", settings),
        _guard_redis(windows.closed_candles, "candle window", settings),
        _guard_redis(RedisChallengerEvidence(client, settings).read, "challenger evidence", settings))


def _newest_version(models_dir: Path) -> str | None:
    try:
        return newest_servable_version(models_dir)
    except (ManifestError, OSError):
        return None


def operations_section(settings: Settings, client: aioredis.Redis) -> tuple[OperationsSection, KafkaLag]:
    """The operations page's breakers, lag and drift parts: the lag read from Kafka (to be closed by the
    caller), the drift monitor's counts read on ``client``, guarded like the other Redis reads."""
    lag = KafkaLag(settings, settings.control.io_timeout_s)
    drift = _guard_redis(DriftCounts(client, settings).psi, "drift counts", settings)
    return OperationsSection(settings, lag.read, drift, lambda: _newest_version(settings.models_dir),
                             f"group {lag.group_id} on {lag.topic}"), lag


async def freeze_after_lookback(caught_up: asyncio.Event) -> None:
    """Once the feed has read the lookback: one full collection, then ``gc.freeze()``.

    The start-up fold leaves the board holding hundreds of thousands of long-lived objects (a week of
    messages validated into pydantic models: 660,000 for 100 symbols), and every full collection traversed
    all of them: the dashboard_latency benchmark saw 1 to 2 requests in 200 wait 0.4 to 0.5 s on one.
    Frozen, they move to the permanent generation, which collections skip (there the longest full
    collection fell to 14 ms); what the board drops later is still freed by its reference count (only a
    cycle among frozen objects would stay, and the board's objects form none)."""
    await caught_up.wait()
    collected, frozen = freeze_long_lived()
    log.info("lookback read: %d objects frozen out of the collector's way (%d collected first)", frozen, collected)


async def serve(settings: Settings, host: str, port: int, loglevel: str) -> None:
    check_binding(settings, host)
    board = Board(settings.dashboard, settings.signals.round_trip_cost_pct)
    changed = asyncio.Condition()
    feed = Feed(settings, board, changed)
    client, reads = redis_reads(settings)
    explanations = OnDemandExplanations(reads.candles, Explainer(settings.models_dir, settings.model_signing_secret),
                                        EXPLAIN_TIMEOUT_S)
    operations, lag = operations_section(settings, client)
    app = build_app(board, changed, reads.control, reads.scores, explanations.explain, settings.dashboard.token,
                    reads.challenger, operations=operations)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=loglevel.lower(), access_log=False,
                                           lifespan="off"))
    feeding = asyncio.create_task(feed.run())
    feeding.add_done_callback(lambda _: setattr(server, "should_exit", True))  # no feed, no dashboard
    freezing = asyncio.create_task(freeze_after_lookback(feed.caught_up))
    log.info("dashboard on http://%s:%d (%s)", host, port,
             "token required" if settings.dashboard.token is not None else "no token: this host only")
    try:
        await server.serve()
    finally:
        if not feeding.done():
            feeding.cancel()
        freezing.cancel()
        await asyncio.gather(feeding, freezing, return_exceptions=True)
        explanations.close()
        await lag.close()
        await client.aclose()
    if feeding.done() and not feeding.cancelled() and feeding.exception() is not None:
        raise feeding.exception()  # type: ignore[misc]


def run_dashboard(settings: Settings, host: str, port: int, loglevel: str) -> None:
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings, host, port, loglevel))
