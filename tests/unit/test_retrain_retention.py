"""Retention: old versions beyond the newest N are pruned, never the live, shadow, fallback, an A/B arm, a
ramping one, the top of the rollback stack, nor the version just made."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bse_predict.control.state_machine import ControlState, Ramp
from bse_predict.retrain.retention import protected_versions, versions_to_prune
from bse_predict.serving.routing import Arm

VERSIONS = [f"v{i:02d}" for i in range(12)]  # oldest first


def test_the_newest_are_kept_and_the_fleets_versions_whatever_their_age() -> None:
    state = ControlState(live="v01", shadow="v11", fallback="v00", previous=("v02", "v03"))
    protected = protected_versions(state, default_live=None, new_version="v11")
    assert protected == {"v01", "v11", "v00", "v03"}
    pruned = versions_to_prune(VERSIONS, protected, keep=3)
    assert pruned == ["v02", "v04", "v05", "v06", "v07", "v08"]


def test_arms_and_a_ramp_are_protected() -> None:
    state = ControlState(live="v05", arms=(Arm("v05", "v05", 0.9), Arm("v02", "v02", 0.1)),
                         ramp=Ramp(version="v03", shares=(0.0, 1.0)))
    assert {"v02", "v03", "v05"} <= protected_versions(state, None, "v11")


def test_before_any_control_message_the_default_live_is_protected() -> None:
    assert protected_versions(None, "v04", "v11") == {"v04", "v11"}
    assert "v04" not in versions_to_prune(VERSIONS, protected_versions(None, "v04", "v11"), keep=1)


def test_keep_zero_prunes_nothing() -> None:
    assert versions_to_prune(VERSIONS, set(), keep=0) == []


@given(live=st.sampled_from(VERSIONS), shadow=st.sampled_from(VERSIONS), fallback=st.sampled_from(VERSIONS),
       keep=st.integers(1, 15))
def test_pruning_never_touches_live_shadow_or_fallback(live: str, shadow: str, fallback: str, keep: int) -> None:
    state = ControlState(live=live, shadow=shadow, fallback=fallback)
    pruned = versions_to_prune(VERSIONS, protected_versions(state, None, VERSIONS[-1]), keep)
    assert not {live, shadow, fallback, VERSIONS[-1]} & set(pruned)
    assert set(VERSIONS[-keep:]).isdisjoint(pruned)
    assert len(VERSIONS) - len(pruned) >= min(keep, len(VERSIONS))
