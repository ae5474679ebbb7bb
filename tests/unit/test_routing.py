"""Sticky A/B routing by symbol."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bse_predict.serving.routing import Arm, arm_for, normalised, symbol_point

SYMBOLS = [f"S{i:04d}USDT" for i in range(4000)]


def test_points_are_fixed_and_spread() -> None:
    assert symbol_point("BTCUSDT") == symbol_point("BTCUSDT")
    points = [symbol_point(s) for s in SYMBOLS]
    assert all(0.0 <= p < 1.0 for p in points)
    deciles = Counter(int(p * 10) for p in points)
    assert all(330 <= deciles[d] <= 470 for d in range(10))


def test_split_follows_the_weights() -> None:
    arms = normalised([Arm("v1", "v1", 0.9), Arm("v2", "v2", 0.1)])
    share = Counter(arm_for(s, arms).variant for s in SYMBOLS)
    assert share["v2"] / len(SYMBOLS) == pytest.approx(0.1, abs=0.02)


def test_normalised_drops_zero_weights_and_refuses_all_zero() -> None:
    arms = normalised([Arm("a", "a", 2), Arm("b", "b", 0), Arm("c", "c", 6)])
    assert [(a.variant, a.weight) for a in arms] == [("a", 0.25), ("c", 0.75)]
    with pytest.raises(ValueError):
        normalised([Arm("a", "a", 0)])


@given(st.floats(0.01, 0.98), st.floats(0.01, 0.99))
def test_raising_the_first_arms_share_never_moves_its_symbols_out(low: float, extra: float) -> None:
    high = min(low + extra, 1.0)
    before = normalised([Arm("new", "v2", low), Arm("old", "v1", 1 - low)])
    after = normalised([Arm("new", "v2", high), Arm("old", "v1", max(1 - high, 0.0))] if high < 1 else [Arm("new", "v2", 1)])
    for symbol in SYMBOLS[:300]:
        if arm_for(symbol, before).variant == "new":
            assert arm_for(symbol, after).variant == "new"


def test_a_symbol_stays_in_its_arm_while_the_split_stands() -> None:
    arms = normalised([Arm("a", "a", 1), Arm("b", "b", 1), Arm("c", "c", 1)])
    first = {s: arm_for(s, arms).variant for s in SYMBOLS[:200]}
    assert first == {s: arm_for(s, arms).variant for s in SYMBOLS[:200]}
    assert set(first.values()) == {"a", "b", "c"}
