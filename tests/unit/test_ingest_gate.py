"""The gate: each closed candle once per open time, updates throttled, the exchange's gaps found, never filled;
a gap's candle that the exchange publishes later passes once; at a restart the candles already in the topic
over the lookback count as produced and every hole between them is still to be filled."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from bse_predict.ingest.gate import CandleGate, Gap

H = 3_600_000
T0 = 1_000 * H


def _gate(interval_s: float = 5.0) -> CandleGate:
    gate = CandleGate(H, interval_s)
    gate.start("BTC", T0)
    return gate


def test_a_close_passes_once_and_a_duplicate_or_an_old_one_never() -> None:
    gate = _gate()
    assert gate.accept_closed("BTC", T0 + H)
    assert not gate.accept_closed("BTC", T0 + H)  # the second close
    assert not gate.accept_closed("BTC", T0)  # already in the topic at start
    assert not gate.accept_closed("BTC", T0 + H + 5)  # off the grid
    assert gate.floor_ms("BTC") == T0 + H and not gate.has_hole("BTC")


def test_a_close_above_a_hole_is_kept_and_the_floor_waits_for_the_hole() -> None:
    gate = _gate()
    assert gate.accept_closed("BTC", T0 + 3 * H)
    assert gate.has_hole("BTC") and gate.floor_ms("BTC") == T0
    assert gate.accept_closed("BTC", T0 + H) and gate.accept_closed("BTC", T0 + 2 * H)  # the backfill fills it
    assert not gate.has_hole("BTC") and gate.floor_ms("BTC") == T0 + 3 * H
    assert not gate.accept_closed("BTC", T0 + 3 * H)  # the stream's close, produced already


def test_updates_are_throttled_per_candle_and_never_follow_the_close() -> None:
    gate = _gate(interval_s=5.0)
    open_ms = T0 + H
    assert gate.accept_update("BTC", open_ms, now_s=100.0)
    assert not gate.accept_update("BTC", open_ms, now_s=104.9)
    assert gate.accept_update("BTC", open_ms, now_s=105.0)
    assert gate.accept_update("BTC", open_ms + H, now_s=105.1)  # a new candle's first update passes at once
    assert gate.accept_closed("BTC", open_ms)
    assert not gate.accept_update("BTC", open_ms, now_s=200.0)  # a late update of a closed candle


def test_every_update_passes_with_interval_zero() -> None:
    gate = _gate(interval_s=0.0)
    assert all(gate.accept_update("BTC", T0 + H, now_s=1.0) for _ in range(3))


def test_a_gap_is_confirmed_only_below_a_newer_candle_and_after_the_delay() -> None:
    gate = _gate()
    returned = [T0 + H, T0 + 4 * H]  # the exchange has no T0+2H, T0+3H
    for t in returned:
        gate.accept_closed("BTC", t)
    # the missing slots closed too recently: not yet the exchange's gap
    assert gate.confirm_gaps("BTC", returned, T0 + 4 * H, confirm_until_ms=T0 + 2 * H) == [Gap("BTC", T0 + 2 * H, T0 + 2 * H, H)]
    assert gate.floor_ms("BTC") == T0 + 2 * H and gate.has_hole("BTC")
    assert gate.confirm_gaps("BTC", returned, T0 + 4 * H, confirm_until_ms=T0 + 9 * H) == [Gap("BTC", T0 + 3 * H, T0 + 3 * H, H)]
    assert gate.floor_ms("BTC") == T0 + 4 * H and not gate.has_hole("BTC")


def test_missing_candles_at_the_end_are_not_a_gap_yet() -> None:
    gate = _gate()
    gate.accept_closed("BTC", T0 + H)
    assert gate.confirm_gaps("BTC", [T0 + H], covered_until_ms=T0 + 5 * H, confirm_until_ms=T0 + 5 * H) == []
    assert gate.floor_ms("BTC") == T0 + H  # T0+2H.. may still come (maintenance not over)


def test_a_stream_close_beyond_the_backfill_range_does_not_confirm_a_gap() -> None:
    gate = _gate()
    gate.accept_closed("BTC", T0 + 6 * H)  # from the stream, after the backfill's server time
    assert gate.confirm_gaps("BTC", [T0 + H], covered_until_ms=T0 + 2 * H, confirm_until_ms=T0 + 9 * H) == []
    gate.accept_closed("BTC", T0 + H)
    assert gate.confirm_gaps("BTC", [T0 + H], covered_until_ms=T0 + 2 * H, confirm_until_ms=T0 + 9 * H) == []


def test_history_before_a_listing_is_not_a_gap() -> None:
    gate = CandleGate(H, 5.0)
    gate.start("NEW", T0, floor_is_candle=False)  # nothing in the topic: a first backfill 1000 candles back
    gate.accept_closed("NEW", T0 + 9 * H)  # the stream's first close, before the backfill answered
    returned = [T0 + 6 * H, T0 + 8 * H, T0 + 9 * H]  # listed at T0+6H, one real gap at T0+7H
    assert [gate.accept_closed("NEW", t) for t in returned] == [True, True, False]
    gaps = gate.confirm_gaps("NEW", returned, T0 + 9 * H, T0 + 9 * H)
    assert gaps == [Gap("NEW", T0 + 7 * H, T0 + 7 * H, H)] and gate.floor_ms("NEW") == T0 + 9 * H


def test_a_candle_published_after_its_gap_was_reported_passes_once() -> None:
    gate = _gate()
    returned = [T0 + H, T0 + 3 * H]
    for t in returned:
        gate.accept_closed("BTC", t)
    assert gate.confirm_gaps("BTC", returned, T0 + 3 * H, T0 + 9 * H) == [Gap("BTC", T0 + 2 * H, T0 + 2 * H, H)]
    assert gate.floor_ms("BTC") == T0 + 3 * H and gate.reported_gaps("BTC") == [T0 + 2 * H]
    assert gate.is_reported_gap("BTC", T0 + 2 * H) and not gate.is_reported_gap("BTC", T0 + H)
    assert gate.accept_closed("BTC", T0 + 2 * H)  # late: the exchange published it after all
    assert not gate.is_reported_gap("BTC", T0 + 2 * H) and gate.reported_gaps("BTC") == []
    assert not gate.accept_closed("BTC", T0 + 2 * H)  # and only once
    assert gate.floor_ms("BTC") == T0 + 3 * H  # the floor never goes back


def test_a_forgotten_gap_drops_its_late_candle() -> None:
    gate = _gate()
    for t in (T0 + H, T0 + 3 * H):
        gate.accept_closed("BTC", t)
    gate.confirm_gaps("BTC", [T0 + H, T0 + 3 * H], T0 + 3 * H, T0 + 9 * H)
    gate.forget_gaps("BTC", before_ms=T0 + 2 * H)
    assert gate.reported_gaps("BTC") == [T0 + 2 * H]  # not older than the bound: still awaited
    gate.forget_gaps("BTC", before_ms=T0 + 3 * H)
    assert gate.reported_gaps("BTC") == [] and not gate.accept_closed("BTC", T0 + 2 * H)


def test_a_restart_fills_the_hole_a_crash_left_below_the_newest_candle() -> None:
    """The topic holds T0+1H..T0+10H but not T0+4H, T0+5H (a crash after the newer ones were acknowledged):
    the floor stops below the hole, the candles in the topic are not sent again, the hole's are."""
    gate = CandleGate(H, 5.0)
    present = [T0 + k * H for k in range(1, 11) if k not in (4, 5)]
    gate.start("BTC", T0 - 160 * H, floor_is_candle=False, present=present)  # the lookback below the newest
    assert gate.floor_ms("BTC") == T0 - 160 * H and gate.has_hole("BTC")
    exchange = [T0 + k * H for k in range(-3, 12)]  # listed at T0-3H: nothing older
    passed = [t for t in exchange if gate.accept_closed("BTC", t)]
    assert passed == [T0 - 3 * H, T0 - 2 * H, T0 - H, T0, T0 + 4 * H, T0 + 5 * H, T0 + 11 * H]
    assert gate.confirm_gaps("BTC", exchange, T0 + 11 * H, T0 + 11 * H) == []  # before the listing: no gap
    assert gate.floor_ms("BTC") == T0 + 11 * H and not gate.has_hole("BTC")


def test_a_restart_with_no_hole_starts_at_the_newest_candle() -> None:
    gate = CandleGate(H, 5.0)
    gate.start("BTC", T0, floor_is_candle=False, present=[T0 + k * H for k in range(1, 6)] + [T0 + 7 * H + 5])
    assert gate.floor_ms("BTC") == T0 + 5 * H and not gate.has_hole("BTC")  # the off-grid record is ignored
    assert not gate.accept_closed("BTC", T0 + 3 * H)
    # the floor is a candle of the topic now: a slot the exchange lacks above it is its gap, not a listing
    gate.accept_closed("BTC", T0 + 7 * H)
    assert gate.confirm_gaps("BTC", [T0 + 7 * H], T0 + 7 * H, T0 + 7 * H) == [Gap("BTC", T0 + 6 * H, T0 + 6 * H, H)]


@settings(max_examples=200, deadline=None)
@given(exchange=st.sets(st.integers(1, 40), min_size=1), arrivals=st.lists(st.integers(1, 40), max_size=120))
def test_whatever_the_order_each_existing_candle_passes_once_and_gaps_are_only_real_holes(
        exchange: set[int], arrivals: list[int]) -> None:
    """Streams deliver any subset of the exchange's candles in any order, twice or late; a final backfill
    returns all. Every existing candle then passed exactly once and the gaps are exactly the missing slots
    below the newest candle."""
    gate = _gate()
    passed: list[int] = []
    for slot in arrivals:
        if slot in exchange and gate.accept_closed("BTC", T0 + slot * H):
            passed.append(slot)
    returned = sorted(exchange)
    for slot in returned:
        if gate.accept_closed("BTC", T0 + slot * H):
            passed.append(slot)
    gaps = gate.confirm_gaps("BTC", [T0 + s * H for s in returned], T0 + 40 * H, T0 + 40 * H)
    assert sorted(passed) == returned
    reported = {(t - T0) // H for g in gaps for t in range(g.first_open_ms, g.last_open_ms + H, H)}
    assert reported == set(range(1, max(exchange))) - exchange
    assert gate.floor_ms("BTC") == T0 + max(exchange) * H


@settings(max_examples=200, deadline=None)
@given(exchange=st.sets(st.integers(1, 40), min_size=1), in_topic=st.sets(st.integers(1, 40)),
       late=st.sets(st.integers(1, 40)))
def test_a_restart_from_any_tail_then_late_publications_pass_every_candle_exactly_once(
        exchange: set[int], in_topic: set[int], late: set[int]) -> None:
    """The topic holds any subset of the exchange's candles (a crash can lose any of them); a restart's backfill
    returns what the exchange has, then the exchange publishes ``late`` slots it lacked. Every candle not in
    the topic passes exactly once; a late one only after its gap was reported."""
    in_topic &= exchange
    late = {s for s in late - exchange if s < max(exchange)}  # slots the exchange lacked below a newer candle
    gate = CandleGate(H, 5.0)
    gate.start("BTC", T0, floor_is_candle=True, present=[T0 + s * H for s in in_topic])
    passed = [s for s in sorted(exchange) if gate.accept_closed("BTC", T0 + s * H)]
    gaps = gate.confirm_gaps("BTC", [T0 + s * H for s in exchange], T0 + 40 * H, T0 + 40 * H)
    assert passed == sorted(exchange - in_topic)
    reported = {(t - T0) // H for g in gaps for t in range(g.first_open_ms, g.last_open_ms + H, H)}
    assert reported == set(range(1, max(exchange))) - exchange
    assert late <= reported
    for s in sorted(late):
        assert gate.is_reported_gap("BTC", T0 + s * H)
        assert gate.accept_closed("BTC", T0 + s * H)
        assert not gate.accept_closed("BTC", T0 + s * H)
    assert gate.reported_gaps("BTC") == sorted(T0 + s * H for s in reported - late)
