"""The rollout control plane as a pure state machine: ``step(state, event, now) -> (state, events)``.

The state says which version answers for which symbol: the live version, its
rollback stack, the A/B arms, the shadow and fallback versions and a warm-up
ramp. Events in: a verified control message (:class:`CommandReceived`), the
passing time (:class:`Tick`), a gate's verdict on a ramping version
(:class:`GateResult`) and a model that failed in service
(:class:`ModelFailed`). Out: the next state and the records for
``control.events`` (applied, refused, ramp advanced/stopped/done).

Checks that need IO (a version's files, hashes, warm-up) are done by the
adapter before the step; it passes their verdicts in ``problems``. Seen
message ids live in the state, so a replay is refused wherever it arrives;
an id is remembered as long as a message carrying it could still be fresh.

Invariants (tests/unit/test_control_state.py): arm weights sum to 1; the
shadow version is never a served one (live or an arm), so its output never
reaches ``predictions``; rollback returns the previous live version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from bse_predict.control.messages import ControlMessage
from bse_predict.serving.breaker import BreakerStatus
from bse_predict.serving.routing import Arm, normalised

__all__ = [
    "Ramp",
    "ControlState",
    "ControlEvent",
    "CommandReceived",
    "Tick",
    "GateResult",
    "ModelFailed",
    "Event",
    "step",
    "served_versions",
    "breaker_event",
    "DEFAULT_REMEMBER_IDS_S",
]

DEFAULT_REMEMBER_IDS_S = 330.0  # freshness window (300 s) plus the allowed clock skew (30 s)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Ramp(_Frozen):
    """A version on its way in: ``shares[step]`` of symbols (0 = shadow only), then the next share."""

    version: str
    shares: tuple[float, ...]
    step: int = 0
    every_s: float | None = None  # None: advance on passed gates only
    next_at: datetime | None = None


class ControlState(_Frozen):
    revision: int = 0  # +1 whenever what is served changes; workers watch it
    sequence: int = 0  # +1 on every stored change (set by the store, not by step): the newest copy has the highest
    live: str | None = None  # None until the first command: the newest version in BSE_MODELS_DIR
    previous: tuple[str, ...] = ()  # the rollback stack, most recent last
    arms: tuple[Arm, ...] = ()  # empty: every symbol to live, variant "control"
    shadow: str | None = None
    fallback: str | None = None
    ramp: Ramp | None = None
    seen: tuple[tuple[str, datetime], ...] = ()  # recent message ids and their issued_at

    def summary(self) -> dict[str, Any]:
        """What is served, for ``control.events`` and the logs."""
        return {
            "revision": self.revision,
            "live": self.live,
            "previous": list(self.previous),
            "arms": {a.variant: {"version": a.version, "weight": a.weight} for a in self.arms},
            "shadow": self.shadow,
            "fallback": self.fallback,
            "ramp": None if self.ramp is None else {"version": self.ramp.version, "share": self.ramp.shares[self.ramp.step]},
        }


EventStatus = Literal["applied", "refused", "ramp_advanced", "ramp_stopped", "ramp_done", "breaker"]


class ControlEvent(_Frozen):
    """One record of ``control.events``. A ``breaker`` record (not a step's: the worker reports it as its
    router changes a breaker) names the ``version``, its new ``breaker`` status and the ``worker``."""

    status: EventStatus
    reason: str
    at: datetime
    id: str | None = None
    command: str | None = None
    issued_by: str | None = None
    key_id: str | None = None  # the message's key_id (None: sent without one, verified with the signing key)
    state: dict[str, Any] | None = None
    version: str | None = None
    breaker: BreakerStatus | None = None
    worker: str | None = None


def breaker_event(version: str, status: BreakerStatus, reason: str | None, at: datetime, worker: str) -> ControlEvent:
    """The record of ``worker``'s breaker of ``version`` turning ``status`` at ``at`` (``reason``: why it opened)."""
    why = {"open": f"opened: {reason or 'failed'}", "half_open": "half-open: the next call is a probe",
           "closed": "closed: the probes answered"}[status]
    return ControlEvent(status="breaker", reason=f"{version} in {worker} {why}", at=at, command="breaker",
                        version=version, breaker=status, worker=worker)


@dataclass(frozen=True)
class CommandReceived:
    """A message that passed signature and freshness checks (:func:`bse_predict.control.messages.verify_message`).

    ``problems``: version -> why it cannot be served (unknown, bad files, failed warm-up),
    from the adapter's checks. ``default_live``: the version served before any command.
    """

    message: ControlMessage
    problems: Mapping[str, str] = field(default_factory=dict)
    default_live: str | None = None


@dataclass(frozen=True)
class Tick:
    """Time passes: forget old ids, advance a scheduled ramp."""


@dataclass(frozen=True)
class GateResult:
    version: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class ModelFailed:
    """A served model's breaker opened."""

    version: str
    reason: str


Event = CommandReceived | Tick | GateResult | ModelFailed


def served_versions(state: ControlState) -> frozenset[str]:
    """Versions whose output reaches ``predictions``."""
    served = {a.version for a in state.arms} if state.arms else set()
    if state.live is not None and not state.arms:
        served.add(state.live)
    return frozenset(served)


def _routing_changed(before: ControlState, after: ControlState) -> bool:
    keys = ("live", "previous", "arms", "shadow", "fallback", "ramp")
    return any(getattr(before, k) != getattr(after, k) for k in keys)


def _with_revision(before: ControlState, after: ControlState) -> ControlState:
    return after.model_copy(update={"revision": before.revision + 1}) if _routing_changed(before, after) else after


class _Refusal(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _promoted(state: ControlState, version: str, shadow_previous: bool = False) -> ControlState:
    """``version`` live; with ``shadow_previous`` the version it replaces serves as the shadow (a watch
    for a live regression: the challenger test keeps pairing the two and rolls a worse one back)."""
    live = state.live
    replaced = live not in (None, version)
    previous = (*state.previous, live) if replaced else state.previous
    shadow = None if state.shadow == version else state.shadow
    return state.model_copy(update={
        "live": version, "previous": previous, "arms": (), "ramp": None,
        "shadow": live if shadow_previous and replaced else shadow,
    })


def _ramp_applied(state: ControlState, ramp: Ramp, now: datetime) -> tuple[ControlState, bool]:
    """The state at ``ramp.step``; True when the ramp reached 1.0 and promoted its version."""
    share = ramp.shares[ramp.step]
    if share >= 1.0:
        return _promoted(state, ramp.version), True
    next_at = None if ramp.every_s is None else now + timedelta(seconds=ramp.every_s)
    ramp = ramp.model_copy(update={"next_at": next_at})
    assert state.live is not None
    if share <= 0.0:
        return state.model_copy(update={"arms": (), "shadow": ramp.version, "ramp": ramp}), False
    arms = normalised([Arm(ramp.version, ramp.version, share), Arm(state.live, state.live, 1.0 - share)])
    shadow = None if state.shadow in {a.version for a in arms} else state.shadow  # a served version is no shadow
    return state.model_copy(update={"arms": arms, "shadow": shadow, "ramp": ramp}), False


def _ramp_stopped(state: ControlState) -> ControlState:
    assert state.ramp is not None
    version = state.ramp.version
    return state.model_copy(update={"arms": (), "ramp": None, "shadow": None if state.shadow == version else state.shadow})


def _named_versions(message: ControlMessage) -> list[str]:
    args = message.args
    if message.command == "ab":
        return list(args["variants"])
    version = args.get("version")
    return [version] if version else []


def _apply_command(state: ControlState, message: ControlMessage, now: datetime) -> tuple[ControlState, str]:
    args = message.args
    command = message.command
    if command == "promote":
        version = args["version"]
        watch = bool(args.get("shadow_previous")) and state.live not in (None, version)
        note = ("already live" if version == state.live else f"{version} is live, {state.live} kept for rollback"
                + (" and served as the shadow to watch for a live regression" if watch else ""))
        return _promoted(state, version, watch), note
    if command == "rollback":
        if not state.previous:
            raise _Refusal("nothing_to_roll_back", "no previous live version")
        back = state.previous[-1]
        shadow = None if state.shadow == back else state.shadow
        new = state.model_copy(update={"live": back, "previous": state.previous[:-1], "arms": (), "ramp": None,
                                       "shadow": shadow})
        return new, f"{back} is live again (was {state.live})"
    if command == "ab":
        arms = normalised([Arm(v, v, w) for v, w in args["variants"].items()])
        shadow = None if state.shadow in {a.version for a in arms} else state.shadow
        new = state.model_copy(update={"arms": arms, "ramp": None, "shadow": shadow})
        return new, "split " + ", ".join(f"{a.version}={a.weight:.4g}" for a in arms)
    if command == "shadow":
        version = args["version"]
        if version is not None and version in served_versions(state):
            raise _Refusal("conflict", f"{version} already answers in predictions; it cannot also be the shadow")
        return state.model_copy(update={"shadow": version}), f"shadow {version or 'off'}"
    if command == "fallback":
        return state.model_copy(update={"fallback": args["version"]}), f"fallback {args['version'] or 'off'}"
    if command == "ramp":
        version = args["version"]
        if version == state.live:
            raise _Refusal("conflict", f"{version} is already live")
        ramp = Ramp(version=version, shares=tuple(args["shares"]), every_s=args["every_s"])
        new, done = _ramp_applied(state, ramp, now)
        return new, f"ramp {version} at share {ramp.shares[0]:.4g}" + (" (promoted)" if done else "")
    raise _Refusal("malformed", f"unknown command {command!r}")  # unreachable: ControlMessage checks it


def _on_command(state: ControlState, event: CommandReceived, now: datetime, remember_s: float) -> tuple[ControlState, list[ControlEvent]]:
    message = event.message
    base = {"id": message.id, "command": message.command, "issued_by": message.issued_by, "key_id": message.key_id,
            "at": now}
    if any(seen_id == message.id for seen_id, _ in state.seen):
        return state, [ControlEvent(status="refused", reason=f"replayed: id {message.id} was already handled", **base)]
    pruned = _pruned(state, now, remember_s)
    remembered = pruned.model_copy(update={"seen": (*pruned.seen, (message.id, message.issued_at))})
    if remembered.live is None and event.default_live is not None:
        remembered = remembered.model_copy(update={"live": event.default_live})
    bad = [f"{v}: {event.problems[v]}" for v in _named_versions(message) if v in event.problems]
    if bad:
        return remembered, [ControlEvent(status="refused", reason="version refused: " + "; ".join(bad), **base)]
    if remembered.live is None and message.command in ("ramp", "ab", "shadow"):
        return remembered, [ControlEvent(status="refused", reason="no live version yet", **base)]
    if message.command == "gate":
        return _on_gate_command(state, remembered, message, now, base)
    try:
        applied, note = _apply_command(remembered, message, now)
    except _Refusal as refusal:
        return remembered, [ControlEvent(status="refused", reason=f"{refusal.kind}: {refusal.reason}", **base)]
    after = _with_revision(state, applied)
    return after, [ControlEvent(status="applied", reason=note, state=after.summary(), **base)]


def _on_gate_command(state: ControlState, remembered: ControlState, message: ControlMessage, now: datetime,
                     base: dict[str, Any]) -> tuple[ControlState, list[ControlEvent]]:
    args = message.args
    if remembered.ramp is None or remembered.ramp.version != args["version"]:
        return remembered, [ControlEvent(status="refused", reason=f"no_ramp: {args['version']} is not ramping", **base)]
    verdict = "passed" if args["passed"] else "failed"
    after, ramp_events = step(remembered, GateResult(args["version"], args["passed"], args["reason"]), now)
    after = after.model_copy(update={"revision": state.revision + (1 if _routing_changed(state, after) else 0)})
    applied = ControlEvent(status="applied", reason=f"gate {verdict}: {args['reason']}", state=after.summary(), **base)
    return after, [applied, *(e.model_copy(update={"state": after.summary()}) for e in ramp_events)]


def _pruned(state: ControlState, now: datetime, remember_s: float) -> ControlState:
    horizon = now - timedelta(seconds=remember_s)
    kept = tuple((i, t) for i, t in state.seen if t >= horizon)
    return state if kept == state.seen else state.model_copy(update={"seen": kept})


def _advance(state: ControlState, now: datetime, why: str) -> tuple[ControlState, list[ControlEvent]]:
    assert state.ramp is not None
    ramp = state.ramp.model_copy(update={"step": state.ramp.step + 1})
    applied, done = _ramp_applied(state, ramp, now)
    after = _with_revision(state, applied)
    share = ramp.shares[ramp.step]
    status: EventStatus = "ramp_done" if done else "ramp_advanced"
    reason = f"{ramp.version} {'promoted' if done else f'at share {share:.4g}'} ({why})"
    return after, [ControlEvent(status=status, reason=reason, at=now, command="ramp", state=after.summary())]


def _stop(state: ControlState, now: datetime, why: str) -> tuple[ControlState, list[ControlEvent]]:
    assert state.ramp is not None
    version = state.ramp.version
    after = _with_revision(state, _ramp_stopped(state))
    return after, [ControlEvent(status="ramp_stopped", reason=f"{version} stopped: {why}", at=now, command="ramp",
                                state=after.summary())]


def step(state: ControlState, event: Event, now: datetime, remember_ids_s: float = DEFAULT_REMEMBER_IDS_S) -> tuple[ControlState, list[ControlEvent]]:
    """The next state and what to report, for one event at ``now`` (an aware datetime)."""
    if isinstance(event, CommandReceived):
        return _on_command(state, event, now, remember_ids_s)
    if isinstance(event, Tick):
        state = _pruned(state, now, remember_ids_s)
        ramp = state.ramp
        if ramp is not None and ramp.next_at is not None and now >= ramp.next_at:
            return _advance(state, now, "on schedule")
        return state, []
    if isinstance(event, GateResult):
        if state.ramp is None or state.ramp.version != event.version:
            return state, []
        if event.passed:
            return _advance(state, now, f"gate passed: {event.reason}")
        return _stop(state, now, f"gate failed: {event.reason}")
    if isinstance(event, ModelFailed):
        if state.ramp is not None and state.ramp.version == event.version:
            return _stop(state, now, f"model failed: {event.reason}")
        return state, []
    raise TypeError(f"not a control event: {event!r}")
