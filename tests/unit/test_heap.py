"""The start-up freeze: cycles collected first, every survivor out of the collector's generations."""

from __future__ import annotations

import gc

from bse_predict.heap import freeze_long_lived


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_freeze_collects_garbage_cycles_then_moves_every_survivor_out_of_the_collections() -> None:
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection may free the cycle before the freeze's own does
    try:
        cycle = _Node()
        cycle.other = cycle
        del cycle  # unreachable now, freed only by a collection
        kept = [_Node() for _ in range(100)]
        result = freeze_long_lived()
        tracked = {id(o) for o in gc.get_objects()}
        assert result.collected >= 1
        assert not any(id(node) in tracked for node in kept)
        assert result.frozen == gc.get_freeze_count() >= len(kept)
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
    tracked = {id(o) for o in gc.get_objects()}
    assert all(id(node) in tracked for node in kept)
