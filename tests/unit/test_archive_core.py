"""The archive's pure core: partition keys, file names, the buffer's dedupe and commit rule, the flush policy
and the merge that keeps the last offset."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from bse_predict.archive.buffer import ArchiveBuffer, ArchivedCandle, flush_due
from bse_predict.archive.layout import FileName, PartitionKey, merged_name, month_of, partition_key
from bse_predict.archive.rows import candles_table, merge_tables
from bse_predict.candles.schema import Candle

HOUR_MS = 3_600_000
JAN_31_23H = 1_738_364_400_000  # 2025-01-31 23:00 UTC
FEB_1_00H = JAN_31_23H + HOUR_MS


def candle(symbol: str = "BTCUSDT", open_time: int = JAN_31_23H, close: float = 100.0, closed: bool = True) -> Candle:
    return Candle(symbol=symbol, timeframe="1h", open_time=open_time, open=100.0, high=max(101.0, close),
                  low=min(99.0, close), close=close, volume=5.0, closed=closed)


# ---------------------------------------------------------------- layout

def test_month_is_the_utc_month_of_the_open_time() -> None:
    assert (month_of(JAN_31_23H), month_of(FEB_1_00H)) == ("2025-01", "2025-02")
    assert partition_key("futures", "BTCUSDT", FEB_1_00H).directory == "market=futures/symbol=BTCUSDT/month=2025-02"


def test_a_file_name_round_trips_and_sorts_by_offset() -> None:
    name = FileName("t1.candles", 3, 120, 245)
    assert name.name == "t1.candles-3-00000000000000000120-00000000000000000245.parquet"
    assert FileName.parse(name.name) == name
    assert FileName.parse("part-0.parquet") is None and FileName.parse(name.temporary("abc")) is None
    assert name.temporary("abc").startswith(".")  # hidden: pyarrow's discovery skips it
    later = FileName("t1.candles", 3, 1_000, 1_001)
    assert sorted([later.name, name.name]) == [name.name, later.name]
    with pytest.raises(ValueError):
        FileName("candles", 0, 5, 4)


def test_a_merged_name_spans_its_partitions_ranges_only() -> None:
    new = FileName("candles", 3, 500, 600)
    existing = [FileName("candles", 3, 0, 499), FileName("candles", 5, 0, 10_000), FileName("old", 3, 0, 9_999)]
    assert merged_name(new, existing) == FileName("candles", 3, 0, 600)
    assert merged_name(new, []) == new


# ---------------------------------------------------------------- buffer

def test_the_last_offset_of_a_candle_wins_and_in_progress_updates_only_move_the_position() -> None:
    buffer = ArchiveBuffer("candles")
    buffer.add(0, 10, candle(close=100.0), now_s=1.0)
    buffer.skip(0, 11)  # an in-progress update, or an invalid record
    buffer.add(0, 12, candle(close=105.0), now_s=2.0)  # the same candle again, later: it wins
    buffer.add(0, 13, candle(open_time=FEB_1_00H), now_s=3.0)
    assert buffer.held == 2 and buffer.oldest_read_s == 1.0
    plan = buffer.plan("futures")
    assert [w.key for w in plan.writes] == [PartitionKey("futures", "BTCUSDT", "2025-01"),
                                            PartitionKey("futures", "BTCUSDT", "2025-02")]
    january = plan.writes[0]
    assert [a.offset for a in january.candles] == [12] and january.candles[0].candle.close == 105.0
    assert {w.file for w in plan.writes} == {FileName("candles", 0, 10, 13)}
    assert plan.commits == {0: 14} and plan.candles == 2


def test_nothing_is_committable_past_a_held_candle() -> None:
    buffer = ArchiveBuffer("candles")
    buffer.skip(1, 0)
    buffer.skip(1, 1)
    assert buffer.idle_commits() == {1: 2} and buffer.safe_commit(1) == 2
    buffer.add(1, 2, candle(), now_s=0.0)
    buffer.skip(1, 3)
    assert buffer.idle_commits() == {} and buffer.safe_commit(1) == 2  # the candle at 2 is not on disk
    plan = buffer.plan("futures")
    buffer.flushed(plan)
    assert buffer.held == 0 and buffer.oldest_read_s is None and buffer.safe_commit(1) == 4
    buffer.committed(plan.commits)
    assert buffer.idle_commits() == {} and buffer.plan("futures").commits == {}


def test_offsets_must_grow_and_a_revoked_partition_is_forgotten() -> None:
    buffer = ArchiveBuffer("candles")
    buffer.add(2, 5, candle(), now_s=0.0)
    with pytest.raises(ValueError):
        buffer.add(2, 4, candle(), now_s=0.0)
    buffer.forget([2])
    assert buffer.held == 0 and buffer.plan("futures").writes == () and buffer.safe_commit(2) is None


@pytest.mark.parametrize(("held", "oldest", "now", "due"), [
    (0, None, 100.0, False), (10, 0.0, 5.0, False), (50_000, 0.0, 0.0, True), (1, 0.0, 300.0, True)])
def test_the_flush_policy(held: int, oldest: float | None, now: float, due: bool) -> None:
    assert flush_due(held, oldest, now, max_candles=50_000, interval_s=300.0) is due


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["AUSDT", "BUSDT"]), st.integers(0, 5), st.booleans()), max_size=40))
def test_the_plan_holds_each_closed_candle_once_with_its_last_value(events: list[tuple[str, int, bool]]) -> None:
    """Step by step against the batch answer: the last closed record per (symbol, hour)."""
    buffer = ArchiveBuffer("candles")
    expected: dict[tuple[str, int], int] = {}
    for offset, (symbol, hour, closed) in enumerate(events):
        one = candle(symbol, JAN_31_23H + hour * HOUR_MS, close=100.0 + offset, closed=closed)
        if closed:
            buffer.add(0, offset, one, now_s=0.0)
            expected[(symbol, one.open_time)] = offset
        else:
            buffer.skip(0, offset)
    plan = buffer.plan("spot")
    got = {(a.candle.symbol, a.candle.open_time): a.offset for w in plan.writes for a in w.candles}
    assert got == expected and plan.candles == len(expected) == buffer.held
    assert plan.commits == ({0: len(events)} if events else {})


# ---------------------------------------------------------------- merge

def _archived(offset: int, hour: int, close: float) -> ArchivedCandle:
    return ArchivedCandle(candle(open_time=JAN_31_23H - hour * HOUR_MS, close=close), 0, offset)


def test_a_merge_keeps_the_highest_offset_per_open_time_also_on_a_replay() -> None:
    on_disk = candles_table([_archived(150, 1, 1.0), _archived(180, 1, 2.0), _archived(160, 2, 3.0)])
    # a replay from an older commit brings offset 150 again: the file's 180 must stay
    replayed = candles_table([_archived(150, 1, 1.0), _archived(190, 3, 4.0)])
    merged = merge_tables([on_disk], replayed)
    rows = merged.table.to_pylist()
    assert [(r["open_time_ms"], r["kafka_offset"], r["close"]) for r in rows] == [
        (JAN_31_23H - 3 * HOUR_MS, 190, 4.0), (JAN_31_23H - 2 * HOUR_MS, 160, 3.0), (JAN_31_23H - HOUR_MS, 180, 2.0)]
    assert merged.dropped == 2 and merged.added == 1


def test_a_merge_of_nothing_old_sorts_and_types_the_rows() -> None:
    merged = merge_tables([], candles_table([_archived(3, 0, 1.0), _archived(2, 5, 1.0)]))
    assert merged.table.schema.field("kafka_offset").type == pa.int64()
    assert merged.table.column("open_time_ms").to_pylist() == sorted(merged.table.column("open_time_ms").to_pylist())
    assert merged.added == 2 and merged.dropped == 0
