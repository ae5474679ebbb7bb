"""The control state machine: a transition table, and a hypothesis stateful test of its invariants."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bse_predict.control.state_machine import (
    CommandReceived,
    ControlState,
    GateResult,
    ModelFailed,
    Tick,
    served_versions,
    step,
)
from bse_predict.control.messages import ControlMessage, ControlRefused, build_message, encode_message, verify_message
from bse_predict.serving.routing import Arm, arm_for

SECRET = "s"
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _message(command: str, args: dict[str, Any], at: datetime = T0, message_id: str | None = None) -> ControlMessage:
    return verify_message(encode_message(build_message(command, args, SECRET, at, message_id=message_id)), SECRET, at)


def _command(state: ControlState, command: str, args: dict[str, Any], at: datetime = T0, problems: dict[str, str] | None = None,
             message_id: str | None = None) -> tuple[ControlState, list]:
    return step(state, CommandReceived(_message(command, args, at, message_id), problems or {}, default_live="v1"), at)


LIVE_V1 = ControlState(live="v1")


@pytest.mark.parametrize(
    ("before", "command", "args", "status", "expect"),
    [
        (ControlState(), "promote", {"version": "v2"}, "applied", {"live": "v2", "previous": ("v1",)}),
        (LIVE_V1, "promote", {"version": "v1"}, "applied", {"live": "v1", "previous": ()}),
        (ControlState(live="v2", previous=("v1",)), "rollback", {}, "applied", {"live": "v1", "previous": ()}),
        (LIVE_V1, "rollback", {}, "refused", {"live": "v1"}),
        (LIVE_V1, "ab", {"variants": {"v1": 0.9, "v2": 0.1}}, "applied",
         {"arms": (Arm("v1", "v1", 0.9), Arm("v2", "v2", 0.1))}),
        (ControlState(live="v1", shadow="v2"), "ab", {"variants": {"v1": 1, "v2": 1}}, "applied", {"shadow": None}),
        (LIVE_V1, "shadow", {"version": "v2"}, "applied", {"shadow": "v2"}),
        (ControlState(live="v1", shadow="v2"), "shadow", {"version": None}, "applied", {"shadow": None}),
        (LIVE_V1, "shadow", {"version": "v1"}, "refused", {"shadow": None}),
        (LIVE_V1, "fallback", {"version": "v0"}, "applied", {"fallback": "v0"}),
        (ControlState(live="v1", shadow="v2"), "promote", {"version": "v2"}, "applied", {"live": "v2", "shadow": None}),
        # a promote that watches: the replaced version serves as the shadow; a rollback ends the watch
        (ControlState(live="v1", shadow="v2"), "promote", {"version": "v2", "shadow_previous": True}, "applied",
         {"live": "v2", "shadow": "v1", "previous": ("v1",)}),
        (LIVE_V1, "promote", {"version": "v1", "shadow_previous": True}, "applied", {"live": "v1", "shadow": None}),
        (ControlState(live="v2", previous=("v1",), shadow="v1"), "rollback", {}, "applied",
         {"live": "v1", "previous": (), "shadow": None}),
        (ControlState(live="v1", arms=(Arm("v1", "v1", 0.5), Arm("v2", "v2", 0.5))), "promote", {"version": "v3"}, "applied",
         {"arms": (), "live": "v3"}),
        (LIVE_V1, "ramp", {"version": "v2", "shares": [0, 0.1, 1]}, "applied", {"shadow": "v2", "arms": ()}),
        (LIVE_V1, "ramp", {"version": "v2", "shares": [0.2, 1]}, "applied",
         {"arms": (Arm("v2", "v2", 0.2), Arm("v1", "v1", 0.8))}),
        (LIVE_V1, "ramp", {"version": "v1", "shares": [0, 1]}, "refused", {"ramp": None}),
    ],
)
def test_transition_table(before: ControlState, command: str, args: dict, status: str, expect: dict) -> None:
    after, events = _command(before, command, args)
    assert [e.status for e in events] == [status]
    for name, value in expect.items():
        got = getattr(after, name)
        if name == "arms":
            assert [a.version for a in got] == [a.version for a in value]
            assert [a.weight for a in got] == pytest.approx([a.weight for a in value])
        else:
            assert got == value
    assert after.revision == before.revision + (1 if after.summary() != before.summary() else 0)


def test_a_version_that_failed_its_checks_is_refused_and_live_stays() -> None:
    after, events = _command(LIVE_V1, "promote", {"version": "v2"}, problems={"v2": "sha256 mismatch"})
    assert after.live == "v1" and after.revision == 0
    assert events[0].status == "refused" and "sha256 mismatch" in events[0].reason


def test_replayed_id_is_refused_until_forgotten_after_the_freshness_window() -> None:
    state, _ = _command(LIVE_V1, "fallback", {"version": "v0"}, message_id="same")
    again, events = _command(state, "fallback", {"version": "v9"}, message_id="same")
    assert events[0].status == "refused" and "replayed" in events[0].reason and again.fallback == "v0"
    later, _ = step(state, Tick(), T0 + timedelta(seconds=400))
    assert later.seen == ()


def test_refused_commands_change_nothing_that_is_served() -> None:
    state, _ = _command(LIVE_V1, "rollback", {})
    assert served_versions(state) == {"v1"} and state.revision == 0


def test_scheduled_ramp_climbs_then_promotes() -> None:
    state, _ = _command(LIVE_V1, "ramp", {"version": "v2", "shares": [0, 0.25, 1], "every_s": 60})
    assert state.shadow == "v2"
    state, events = step(state, Tick(), T0 + timedelta(seconds=30))
    assert events == [] and state.shadow == "v2"
    state, events = step(state, Tick(), T0 + timedelta(seconds=61))
    assert events[0].status == "ramp_advanced" and state.shadow is None
    assert {a.version: a.weight for a in state.arms} == pytest.approx({"v2": 0.25, "v1": 0.75})
    state, events = step(state, Tick(), T0 + timedelta(seconds=125))
    assert events[0].status == "ramp_done" and state.live == "v2" and state.previous == ("v1",) and state.arms == ()


def test_gated_ramp_stops_at_the_first_failed_gate() -> None:
    state, _ = _command(LIVE_V1, "ramp", {"version": "v2", "shares": [0, 0.1, 0.5, 1]})
    state, _ = step(state, GateResult("v2", True, "no breaker trips"), T0)
    state, _ = step(state, Tick(), T0 + timedelta(days=1))  # no schedule: time alone never advances
    assert state.ramp is not None and state.ramp.step == 1
    state, events = step(state, GateResult("v2", False, "log loss worse"), T0)
    assert events[0].status == "ramp_stopped" and "log loss worse" in events[0].reason
    assert state.live == "v1" and state.arms == () and state.shadow is None and state.ramp is None


def test_signed_gate_commands_drive_a_gated_ramp() -> None:
    state, _ = _command(LIVE_V1, "ramp", {"version": "v2", "shares": [0, 0.5, 1]})
    state, events = _command(state, "gate", {"version": "v3", "passed": True, "reason": "x"})
    assert events[0].status == "refused" and "not ramping" in events[0].reason
    state, events = _command(state, "gate", {"version": "v2", "passed": True, "reason": "shadow log loss ok"})
    assert [e.status for e in events] == ["applied", "ramp_advanced"]
    assert {a.version for a in state.arms} == {"v1", "v2"} and state.revision == 2
    state, events = _command(state, "gate", {"version": "v2", "passed": True, "reason": "A/B ok"})
    assert [e.status for e in events] == ["applied", "ramp_done"] and state.live == "v2"


def test_a_failed_gate_command_stops_the_ramp() -> None:
    state, _ = _command(LIVE_V1, "ramp", {"version": "v2", "shares": [0.1, 1]})
    state, events = _command(state, "gate", {"version": "v2", "passed": False, "reason": "worse log loss"})
    assert [e.status for e in events] == ["applied", "ramp_stopped"] and state.arms == () and state.live == "v1"


def test_breaker_trip_of_the_ramping_version_stops_the_ramp_and_others_are_ignored() -> None:
    state, _ = _command(LIVE_V1, "ramp", {"version": "v2", "shares": [0.5, 1]})
    same, events = step(state, ModelFailed("v1", "nan"), T0)
    assert same == state and events == []
    stopped, events = step(state, ModelFailed("v2", "nan outputs"), T0)
    assert events[0].status == "ramp_stopped" and stopped.arms == ()


VERSIONS = ("v1", "v2", "v3", "v4")


class ControlMachine(RuleBasedStateMachine):
    """Random command sequences: the invariants hold after every step."""

    @initialize()
    def start(self) -> None:
        self.state = ControlState(live="v1")
        self.now = T0
        self.count = 0
        self.last_raw: bytes | None = None  # the bytes of the last message sent, for replays

    def _send(self, command: str, args: dict[str, Any], problems: dict[str, str] | None = None) -> list:
        self.count += 1
        self.now += timedelta(seconds=7)
        before = self.state
        self.last_raw = encode_message(build_message(command, args, SECRET, self.now, message_id=f"m{self.count}"))
        message = verify_message(self.last_raw, SECRET, self.now)
        self.state, events = step(self.state, CommandReceived(message, problems or {}), self.now)
        assert events and events[0].status in ("applied", "refused")
        if events[0].status == "refused":
            assert served_versions(self.state) == served_versions(before)
        return events

    @rule(version=st.sampled_from(VERSIONS), broken=st.booleans())
    def promote(self, version: str, broken: bool) -> None:
        before = self.state.live
        events = self._send("promote", {"version": version}, {version: "corrupt"} if broken else None)
        if broken:
            assert self.state.live == before
        else:
            assert events[0].status == "applied" and self.state.live == version

    @rule()
    def rollback(self) -> None:
        before = self.state
        events = self._send("rollback", {})
        if before.previous:
            assert self.state.live == before.previous[-1]
        else:
            assert events[0].status == "refused"

    @rule(weights=st.dictionaries(st.sampled_from(VERSIONS), st.floats(0.01, 10), min_size=1, max_size=4))
    def ab(self, weights: dict[str, float]) -> None:
        self._send("ab", {"variants": weights})

    @rule(version=st.one_of(st.none(), st.sampled_from(VERSIONS)))
    def shadow(self, version: str | None) -> None:
        self._send("shadow", {"version": version})

    @rule(version=st.sampled_from(VERSIONS), shares=st.sampled_from([[0, 0.1, 1], [0.3, 1], [0, 0.05, 0.5, 1]]),
          every=st.one_of(st.none(), st.just(60.0)))
    def ramp(self, version: str, shares: list[float], every: float | None) -> None:
        self._send("ramp", {"version": version, "shares": shares, "every_s": every})

    @rule(seconds=st.integers(0, 200))
    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self.state, _ = step(self.state, Tick(), self.now)

    @precondition(lambda self: self.state.ramp is not None)
    @rule(passed=st.booleans())
    def gate(self, passed: bool) -> None:
        assert self.state.ramp is not None
        version = self.state.ramp.version
        self.state, events = step(self.state, GateResult(version, passed, "test"), self.now)
        if not passed:
            assert self.state.ramp is None and version not in served_versions(self.state) | {self.state.shadow}

    @rule(passed=st.booleans())
    def gate_command(self, passed: bool) -> None:
        ramping = self.state.ramp.version if self.state.ramp is not None else "v2"
        self._send("gate", {"version": ramping, "passed": passed, "reason": "test"})

    @rule()
    def replay_last(self) -> None:
        """The same bytes again: refused as stale once old, as replayed while fresh; nothing changes."""
        if self.last_raw is None:
            return
        try:
            message = verify_message(self.last_raw, SECRET, self.now)
        except ControlRefused as refusal:
            assert refusal.kind == "stale"
            return
        before = self.state
        self.state, events = step(self.state, CommandReceived(message), self.now)
        assert events[0].status == "refused" and "replayed" in events[0].reason and self.state == before

    @invariant()
    def weights_sum_to_one(self) -> None:
        if self.state.arms:
            assert math.isclose(sum(a.weight for a in self.state.arms), 1.0, abs_tol=1e-9)
            assert all(a.weight > 0 for a in self.state.arms)

    @invariant()
    def shadow_never_answers(self) -> None:
        assert self.state.shadow is None or self.state.shadow not in served_versions(self.state)
        if self.state.arms:
            for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"):
                assert arm_for(symbol, self.state.arms).version != self.state.shadow

    @invariant()
    def something_is_live(self) -> None:
        assert self.state.live is not None
        assert self.state.live not in self.state.previous[-1:]


TestControlMachine = ControlMachine.TestCase
TestControlMachine.settings = hypothesis_settings(max_examples=60, stateful_step_count=30, deadline=None)
