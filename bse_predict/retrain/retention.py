"""Which old versions a retrain deletes: pure, the versions and the control state passed in.

The newest ``keep`` versions (by manifest ``created_at``) stay, and so does every
version the fleet may need without warning, whatever its age: the live one, the
shadow, the fallback, the A/B arms, a ramping version, the top of the rollback
stack (the version a rollback or a live regression returns to) and the version
the retrain just made. ``keep`` 0 prunes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bse_predict.control.state_machine import ControlState

__all__ = ["protected_versions", "versions_to_prune"]


def protected_versions(state: ControlState | None, default_live: str | None, new_version: str | None) -> frozenset[str]:
    """Versions never pruned under ``state`` (None: no control message yet, ``default_live`` serves)."""
    names: set[str | None] = {new_version}
    if state is None or state.live is None:
        names.add(default_live)
    if state is not None:
        names.update({state.live, state.shadow, state.fallback})
        names.update(arm.version for arm in state.arms)
        names.add(state.ramp.version if state.ramp is not None else None)
        names.add(state.previous[-1] if state.previous else None)
    return frozenset(name for name in names if name)


def versions_to_prune(oldest_first: Sequence[str], protected: Iterable[str], keep: int) -> list[str]:
    """Of ``oldest_first`` (every version, oldest first), those beyond the newest ``keep`` that are not
    ``protected``, oldest first."""
    if keep <= 0:
        return []
    guarded = set(protected)
    kept_newest = set(oldest_first[-keep:])
    return [v for v in oldest_first if v not in kept_newest and v not in guarded]
