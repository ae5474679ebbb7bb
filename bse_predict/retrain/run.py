"""One retrain, end to end (a composition root): archive → train → gate → signed shadow → prune.

1. **read**: the archive (``retrain.archive``, read like candle files by
   :func:`bse_predict.candles.files.read_candle_files`), the newest
   ``retrain.months`` months, cut into training candles, a purge and the holdout
   (:mod:`bse_predict.retrain.holdout`); the control state says which version is
   live (before any control message: the newest version on disk).
2. **train**: :func:`bse_predict.training.train.train_version` on the training candles.
3. **gate**: a version whose served model training marked not servable is refused
   (:mod:`bse_predict.serving.servable`); else both versions served by their runners on the holdout
   (:mod:`bse_predict.retrain.holdout_scores`), judged by :mod:`bse_predict.retrain.gate`.
4. **shadow**: the signed ``shadow`` message, and a worker's ``applied`` awaited
   on ``control.events``; the sequential challenger test takes it from there.
5. **prune**: old versions beyond ``retrain.keep_versions`` (:mod:`bse_predict.retrain.retention`).

Each step is reported on ``control.events`` (:mod:`bse_predict.retrain.report`) and, with
``retrain.ops_chat``, as a Telegram note. Any failure is reported as ``retrain_failed``
with its step and reason and raised as :class:`~bse_predict.retrain.errors.RetrainError`;
a version trained but not shadowed is deleted, so nothing the fleet could pick up is left
(before any control message a worker starting anew serves the newest version on disk).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from configs.settings import Settings
from bse_predict.alerts.errors import AlertsError
from bse_predict.alerts.telegram import TelegramClient
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.control.messages import build_message
from bse_predict.control.sender import send_control_and_wait
from bse_predict.control.state_machine import ControlState
from bse_predict.control.state_store import RedisControlStore
from bse_predict.connections.clients import connect_redis
from bse_predict.ensembles.member_runner import load_model_set
from bse_predict.errors import BsePredictError
from bse_predict.monitoring.event_report import EventReport
from bse_predict.retrain.errors import GateRefused, RetrainError
from bse_predict.retrain.gate import GateDecision, gate_decision
from bse_predict.retrain.holdout import RetrainWindow, clip_series, out_of_sample, retrain_window
from bse_predict.retrain.holdout_scores import holdout_history_ms, score_holdout
from bse_predict.retrain.ledger import RetrainLedger
from bse_predict.retrain.publisher import EventProducer
from bse_predict.retrain.report import ops_note, retrain_event
from bse_predict.retrain.retention import protected_versions, versions_to_prune
from bse_predict.serving.manifest import list_versions, load_manifest
from bse_predict.serving.servable import newest_servable_version, servable_problem
from bse_predict.training.train import train_version

__all__ = ["RetrainResult", "retrain_once", "check_retrain_settings"]

log = logging.getLogger(__name__)

_EXPECTED = (BsePredictError, KafkaError, RedisError, OSError, ValueError, TimeoutError)
_GATE_MEMBER_TIMEOUT_MS = 600_000.0


@dataclass
class RetrainResult:
    version: str
    events: list[dict[str, Any]] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)


def check_retrain_settings(settings: Settings) -> None:
    """What a retrain needs before it spends minutes training; RetrainError ("check") otherwise."""
    config = settings.retrain
    if not config.archive:
        raise RetrainError("check", "retrain.archive names no candle files or directories (the archive)")
    if settings.control_secret is None:
        raise RetrainError("check", "BSE_CONTROL_SECRET is not set: the shadow message could not be signed")
    if config.ops_chat and settings.telegram_bot_token is None:
        raise RetrainError("check", "retrain.ops_chat is set but TELEGRAM_BOT_TOKEN is not")


class _Steps:
    """The run's reporting: each event on ``control.events``, to the operations chat, and to ``progress``."""

    def __init__(self, settings: Settings, report: EventReport, telegram: TelegramClient | None,
                 clock: Callable[[], datetime], progress: Callable[[str], None], run_id: str, version: str) -> None:
        self._settings = settings
        self._report = report
        self._telegram = telegram
        self.clock = clock
        self.progress = progress
        self.run_id = run_id
        self.version = version
        self.events: list[dict[str, Any]] = report.sent

    async def say(self, status: str, reason: str, **fields: Any) -> None:
        event = retrain_event(status, reason, self.clock(), self.run_id, self.version, **fields)
        self.progress(f"{status}: {reason}")
        await self._report.report(event)
        if self._telegram is not None and self._settings.retrain.ops_chat:
            try:
                await self._telegram.send_message(self._settings.retrain.ops_chat, ops_note(event))
            except AlertsError as error:  # the note is a courtesy: the run goes on, control.events has it all
                log.warning("retrain: the operations note was not sent: %s", error)


def _read_archive(settings: Settings) -> tuple[list[CandleSeries], list[CandleSeries], RetrainWindow]:
    """(training candles, the holdout's candles with their lookback, the window)."""
    config = settings.retrain
    series = read_candle_files([Path(p) for p in config.archive], settings.market.timeframe)
    if config.symbols:
        series = [s for s in series if s.symbol in set(config.symbols)]
    series = [s for s in series if s.timeframe == settings.market.timeframe and len(s.open_time_ms)]
    if not series:
        raise RetrainError("read", f"the archive holds no {settings.market.timeframe} candles"
                                   + (f" of {', '.join(config.symbols)}" if config.symbols else ""))
    step_ms = settings.market.timeframe_ms
    purge_hours = config.purge_hours if config.purge_hours is not None else settings.market.horizon_hours
    window = retrain_window(max(int(s.open_time_ms[-1]) for s in series), config.months, config.holdout_hours,
                            purge_hours, step_ms)
    training = clip_series(series, window.first_ms, window.train_end_ms)
    holdout = clip_series(series, window.holdout_start_ms - holdout_history_ms(step_ms), window.newest_ms + 1)
    if not training:
        raise RetrainError("read", f"no candles to train on between the window's start and the holdout ({window.describe()})")
    return training, holdout, window


def _live_version(settings: Settings, state: ControlState | None) -> str:
    if state is not None and state.ramp is not None:
        raise RetrainError("read", f"{state.ramp.version} is ramping in: retrain once its ramp is done or stopped")
    if state is not None and state.shadow is not None:
        raise RetrainError("read", f"{state.shadow} is in shadow under the challenger test: retrain once it is "
                                   "promoted or dropped (or `control shadow off`)")
    if state is not None and state.live is not None:
        return state.live
    return newest_servable_version(settings.models_dir)  # what a worker serves before any control message


def _gate(settings: Settings, live: str, version: str, holdout: list[CandleSeries],
          window: RetrainWindow) -> tuple[GateDecision, RetrainWindow]:
    """Refuse a new version whose served model training marked not servable (no worker would serve it);
    else load both versions as the worker serves them, score them on the holdout (out of the live version's
    sample), decide. An ensemble served member by member gets no latency deadline here: the worker's
    ``member_timeout_ms`` guards a live batch's latency, and a member dropped on a busy machine would
    score a degraded ensemble instead of the version."""
    secret = settings.model_signing_secret
    if (problem := servable_problem(load_manifest(settings.models_dir / version, secret))) is not None:
        return GateDecision.not_servable(problem), window
    config = settings.worker.ensemble.model_copy(update={"member_timeout_ms": _GATE_MEMBER_TIMEOUT_MS})
    spans = load_manifest(settings.models_dir / live, secret).data_span.values()
    trained_until_ms = max((span.end_ms for span in spans), default=None)
    step_ms = settings.market.timeframe_ms
    window = out_of_sample(window, trained_until_ms, settings.market.horizon_candles * step_ms, step_ms)
    loaded = [load_model_set(settings.models_dir / name, config, signing_key=secret) for name in (live, version)]
    try:
        scores = score_holdout(holdout, window, loaded[0], loaded[1], settings.market.targets_pct,
                               settings.market.horizon_candles, settings.worker.batch_max_events)
    finally:
        for model in loaded:
            close = getattr(model, "close", None)
            if close is not None:
                close()
    return gate_decision(scores, settings.retrain.gate, settings.retrain.min_holdout_rows), window


async def _shadow(settings: Settings, version: str, now: datetime) -> dict[str, Any] | None:
    """Send the signed shadow; the applied state, or RetrainError when it is refused or unanswered."""
    assert settings.control_secret is not None
    config = settings.retrain
    fields = build_message("shadow", {"version": version}, settings.control_secret.get_secret_value(), now,
                           issued_by=config.issued_by, key_id=settings.control_key_id)
    answer = await send_control_and_wait(settings, fields, config.shadow_wait_s)
    if answer is None:
        raise RetrainError("shadow", f"no worker answered the shadow message {fields['id']} within "
                                     f"{config.shadow_wait_s:g} s (is a worker running?)")
    if answer.status != "applied":
        raise RetrainError("shadow", f"the workers refused shadow {version}: {answer.reason}")
    return answer.state


def _delete(settings: Settings, version: str, trained: bool) -> None:
    if trained:
        shutil.rmtree(settings.models_dir / version, ignore_errors=True)


def _prune(settings: Settings, state: ControlState | None, default_live: str, version: str) -> list[str]:
    versions = [m.version for m in list_versions(settings.models_dir)]
    doomed = versions_to_prune(versions, protected_versions(state, default_live, version), settings.retrain.keep_versions)
    for name in doomed:
        shutil.rmtree(settings.models_dir / name)
    return doomed


@dataclass
class _Reached:
    """How far a run got: the step it is in, and whether its version was trained and shadowed."""

    step: str = "read"
    trained: bool = False
    shadowed: bool = False


async def retrain_once(settings: Settings, *, trigger: str = "by hand", clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                       progress: Callable[[str], None] = lambda _: None, show_progress: bool = False) -> RetrainResult:
    """One retrain; see the module docstring. Raises RetrainError (already reported) when it fails."""
    check_retrain_settings(settings)
    config = settings.retrain
    started = clock()
    version = f"{config.version_prefix}{started:%Y%m%dT%H%M%S}"
    async with AsyncExitStack() as stack:
        producer = await stack.enter_async_context(EventProducer(settings))
        report = EventReport(producer, settings.topic("control.events"), b"retrain", log, logging.INFO, "retrain")
        telegram = None
        if config.ops_chat and settings.telegram_bot_token is not None:
            telegram = await stack.enter_async_context(
                TelegramClient(settings.telegram_api_url, settings.telegram_bot_token, settings.alerts))
        steps = _Steps(settings, report, telegram, clock, progress, uuid.uuid4().hex[:12], version)
        store = RedisControlStore.connect(settings)
        stack.push_async_callback(store.close)
        ledger_client = connect_redis(settings)
        stack.push_async_callback(ledger_client.aclose)
        await RetrainLedger(ledger_client, settings.topic_prefix, config.min_interval_hours).mark(started)
        reached = _Reached()
        try:
            await steps.say("retrain_started", f"{trigger}: the newest {config.months} months of "
                                               f"{', '.join(config.archive)}", trigger=trigger)
            return await _run_steps(settings, steps, store, started, reached, show_progress)
        except _EXPECTED as error:
            failure = error if isinstance(error, RetrainError) else RetrainError(
                reached.step, str(error).splitlines()[0] if str(error) else type(error).__name__)
            await _report_failure(steps, failure, reached)
            raise failure from error
        finally:  # an interrupt too: a version trained but not shadowed must not stay where workers look
            if not reached.shadowed:
                _delete(settings, version, reached.trained)


async def _run_steps(settings: Settings, steps: _Steps, store: RedisControlStore, started: datetime,
                     reached: _Reached, show_progress: bool) -> RetrainResult:
    """Read, train, gate, shadow and prune, each step reported; ``reached`` follows the run."""
    version, clock = steps.version, steps.clock
    training, holdout, window = await asyncio.to_thread(_read_archive, settings)
    live = _live_version(settings, await store.read())
    candles = sum(len(s.open_time_ms) for s in training)
    steps.progress(f"read {candles} training candles of {len(training)} series; {window.describe()}; "
                   f"live version {live}")
    reached.step = "train"
    folder = await asyncio.to_thread(train_version, training, settings, version, show_progress=show_progress)
    reached.trained = True
    seconds = (clock() - started).total_seconds()
    await steps.say("retrain_trained", f"{version} trained in {seconds:.1f} s on {candles} candles of "
                                       f"{len(training)} series ({window.describe()})",
                    folder=str(folder), live=live, train_end_ms=window.train_end_ms,
                    holdout_start_ms=window.holdout_start_ms, newest_ms=window.newest_ms)
    reached.step = "gate"
    decision, scored = await asyncio.to_thread(_gate, settings, live, version, holdout, window)
    later = ("" if scored.holdout_start_ms == window.holdout_start_ms else
             f" (holdout from {scored.describe().split('holdout ')[1]}: after the live version's training data)")
    await steps.say("retrain_gated", f"{version} against live {live}: {decision.reason}{later}", live=live,
                    holdout_start_ms=scored.holdout_start_ms, **decision.fields())
    if not decision.passed:
        raise GateRefused(decision.reason)
    reached.step = "shadow"
    applied = await _shadow(settings, version, clock())
    reached.shadowed = True
    await steps.say("retrain_shadowed", f"{version} is the shadow beside live {live}; the challenger test "
                                        "promotes or drops it"
                    + ("" if settings.challenger.auto_promote else
                       " (challenger.auto_promote is off: its verdict is only recommended)"),
                    state=applied)
    reached.step = "prune"
    pruned = await asyncio.to_thread(_prune, settings, await store.read(), live, version)
    await steps.say("retrain_pruned", f"deleted {', '.join(pruned)}" if pruned else
                    f"nothing to delete (retrain.keep_versions {settings.retrain.keep_versions})", pruned=pruned)
    return RetrainResult(version, steps.events, pruned)


async def _report_failure(steps: _Steps, failure: RetrainError, reached: _Reached) -> None:
    """The ``retrain_failed`` event, saying what the failure left; a broker that cannot take it is logged."""
    if reached.shadowed:
        left = f"{steps.version} stays in shadow"
    else:
        left = "the fleet is unchanged" + (f", {steps.version} deleted" if reached.trained else "")
    try:
        await steps.say("retrain_failed", f"{failure.reason} ({left})", step=failure.step,
                        refused=isinstance(failure, GateRefused))
    except (KafkaError, OSError) as report_error:
        log.error("retrain: the failure could not be reported on control.events: %s", report_error)
