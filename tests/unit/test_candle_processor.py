"""The candle processor in process: raw records in, what the publisher got, the store and the counts out.

No broker and no Redis: the in-memory window store (it passes the store contract suite with the
Redis one), a publisher that collects what it is given, small real predictors (a constant one, and
the two tiny RandomForest versions of the golden replay where real predictions matter), and the
candles of ``tests/data/candles/TINYUSDT-1h.csv`` encoded as the replay encodes them. The
integration tests run the same processor against the real services.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError

from configs.settings import BreakerConfig, Settings
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.candles.schema import Candle, DeadLetter, Prediction, prediction_id
from bse_predict.candles.window import window_ending_at
from bse_predict.control.state_machine import ControlState
from bse_predict.errors import ManifestError
from bse_predict.features import inputs as inputs_module
from bse_predict.features.definitions import LOOKBACK_CANDLES
from bse_predict.serving.onnx_runner import ServedModelSet
from bse_predict.serving.router import ModelRouter
from bse_predict.stream.processor import CandleProcessor, RawMessage
from bse_predict.stream.replay import candle_payload, candle_records
from bse_predict.stream.window_store import MemoryWindowStore

DATA = Path(__file__).resolve().parents[1] / "data"
TINY_FILE = DATA / "candles" / "TINYUSDT-1h.csv"
MODELS = DATA / "golden" / "models"
LIVE, SHADOW = "v-golden", "v-golden-b"
SYMBOL = "TINYUSDT"
TIMEFRAME = "1h"
HOUR_MS = 3_600_000
TOPIC = "candles"
FIRST_PREDICTED = LOOKBACK_CANDLES - 1  # row 168: the first candle with 169 candles of history, itself included
TARGETS = ("1%", "2%", "5%")


# -- small real parts -------------------------------------------------------------------------


class Constant:
    """A predictor answering the same probabilities for every row."""

    input_kinds = ("features",)
    min_history = LOOKBACK_CANDLES
    targets = TARGETS
    model_name = "constant"

    def __init__(self, version: str = "v-constant", p_up: float = 0.5) -> None:
        self.version = version
        self.p_up = p_up
        self.rows = 0

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(inputs["features"])
        self.rows += rows
        return {t: np.tile([self.p_up, 0.9 - self.p_up, 0.1], (rows, 1)) for t in TARGETS}


@dataclass(frozen=True)
class Published:
    """One acknowledged ``publish`` call."""

    predictions: tuple[Prediction, ...]
    dead_letters: tuple[DeadLetter, ...]
    shadow: tuple[Prediction, ...]


class CollectingPublisher:
    """Keeps every acknowledged call in order; :meth:`fail_next` makes the next call raise as a broker
    that never acknowledged would (nothing is kept for it)."""

    def __init__(self) -> None:
        self.calls: list[Published] = []
        self.failures = 0
        self._fail_next = False

    def fail_next(self) -> None:
        self._fail_next = True

    async def publish(self, predictions: Sequence[Prediction], dead_letters: Sequence[DeadLetter],
                      shadow: Sequence[Prediction] = ()) -> None:
        if self._fail_next:
            self._fail_next = False
            self.failures += 1
            raise KafkaTimeoutError("no acknowledgement from the broker")
        self.calls.append(Published(tuple(predictions), tuple(dead_letters), tuple(shadow)))

    @property
    def last(self) -> Published:
        return self.calls[-1]

    def prediction_ids(self) -> list[str]:
        return [p.id for call in self.calls for p in call.predictions]


class SwappableStore:
    """The memory store behind a handle, so a test can make it lose everything as a wiped Redis does."""

    def __init__(self, retain_candles: int) -> None:
        self._retain = retain_candles
        self.inner = MemoryWindowStore(retain_candles)

    def wipe(self) -> None:
        self.inner = MemoryWindowStore(self._retain)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class HistoryRebuilder:
    """The rebuilder's contract over the candle file: writes the candles before ``candle`` into the store
    (the newest ``read_count``) and says whether it found any."""

    def __init__(self, store: object, series: CandleSeries, read_count: int) -> None:
        self._store = store
        self._series = series
        self._read_count = read_count
        self.calls: list[tuple[str, int, str, int, int]] = []

    async def rebuild(self, candle: Candle, topic: str, partition: int, offset: int) -> bool:
        self.calls.append((candle.symbol, candle.open_time, topic, partition, offset))
        before = np.flatnonzero(self._series.open_time_ms < candle.open_time)[-self._read_count:]
        history = [_candle(self._series, int(row)) for row in before]
        await self._store.write_closed(history, read_count=1)  # type: ignore[attr-defined]
        return bool(history)


# -- candles and records ------------------------------------------------------------------------


def _candle(series: CandleSeries, row: int) -> Candle:
    o, h, l, c, v = (float(x) for x in series.ohlcv[row])
    return Candle(symbol=series.symbol, timeframe=series.timeframe, open_time=int(series.open_time_ms[row]),
                  open=o, high=h, low=l, close=c, volume=v, closed=True)


def _id(series: CandleSeries, row: int) -> str:
    return prediction_id(series.symbol, series.timeframe, int(series.open_time_ms[row]))


class Feed:
    """Kafka records of the tiny series on one partition, offsets counted as the broker would."""

    def __init__(self, series: CandleSeries) -> None:
        self.series = series
        self._offset = 0

    def raw(self, value: bytes, key: bytes | None = SYMBOL.encode()) -> RawMessage:
        message = RawMessage(key, value, TOPIC, 0, self._offset)
        self._offset += 1
        return message

    def rows(self, start: int, stop: int, updates: int = 0) -> list[RawMessage]:
        """Rows ``start..stop-1`` as the replay sends them, each closed candle after ``updates`` forming ones."""
        part = CandleSeries(self.series.symbol, self.series.timeframe, self.series.open_time_ms[start:stop],
                            self.series.ohlcv[start:stop], self.series.source)
        return [self.raw(r.payload, r.symbol.encode()) for r in candle_records([part], updates=updates)]

    def payload(self, row: int, closed: bool = True, **changes: object) -> bytes:
        fields = orjson.loads(candle_payload(self.series.symbol, self.series.timeframe,
                                             int(self.series.open_time_ms[row]), self.series.ohlcv[row], closed))
        return orjson.dumps({**fields, **changes})


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> CandleSeries:
    (series,) = read_candle_files([TINY_FILE])
    assert (series.symbol, series.timeframe, len(series.open_time_ms)) == (SYMBOL, TIMEFRAME, 200)
    return series


@pytest.fixture(scope="module")
def golden() -> dict[str, ServedModelSet]:
    return {version: ServedModelSet.load(MODELS / version) for version in (LIVE, SHADOW)}


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1, thread_name_prefix="inference") as pool:
        yield pool


@dataclass
class Rig:
    processor: CandleProcessor
    store: MemoryWindowStore
    publisher: CollectingPublisher
    feed: Feed


@pytest.fixture
def make_rig(base_settings: Settings, tiny: CandleSeries, executor: ThreadPoolExecutor):
    """A processor over a fresh memory store and collecting publisher; the clock stands two hours
    after the file's last candle opened, so every candle of the file has closed."""
    now_ms = int(tiny.open_time_ms[-1]) + 2 * HOUR_MS

    def make(predictor: object, store: object | None = None, rebuilder: object | None = None) -> Rig:
        store = store if store is not None else MemoryWindowStore(base_settings.window.retain_candles)
        publisher = CollectingPublisher()
        processor = CandleProcessor(base_settings, store, predictor, publisher, executor,  # type: ignore[arg-type]
                                    rebuilder=rebuilder, clock_ms=lambda: now_ms)  # type: ignore[arg-type]
        return Rig(processor, store, publisher, Feed(tiny))  # type: ignore[arg-type]
    return make


def _golden_router(golden: dict[str, ServedModelSet], shadow: bool) -> ModelRouter:
    def loader(version: str) -> ServedModelSet:
        if version not in golden:
            raise ManifestError(f"unknown version {version}")
        return golden[version]

    router = ModelRouter(golden[LIVE], loader, BreakerConfig(latency_budget_ms=60_000.0))
    router.table = router.table_for(ControlState(revision=1, live=LIVE, shadow=SHADOW if shadow else None))
    return router


# -- the tests ---------------------------------------------------------------------------------


async def test_a_closed_candle_twice_in_a_batch_and_again_later_is_predicted_once(make_rig, tiny) -> None:
    rig = make_rig(Constant())
    feed = rig.feed
    history = feed.rows(0, FIRST_PREDICTED + 1)
    again = feed.raw(history[-1].value)  # the same closed candle, redelivered at a later offset
    await rig.processor.process([*history, again])
    await rig.processor.process([feed.raw(history[-1].value)])
    assert rig.publisher.prediction_ids() == [_id(tiny, FIRST_PREDICTED)]
    assert rig.publisher.last.predictions == ()
    assert rig.processor.counts["already_predicted"] == 1
    assert rig.processor.counts["closed"] == FIRST_PREDICTED + 3  # every arrival counted, one stored
    times, _ = await rig.store.closed_candles(SYMBOL, TIMEFRAME)
    assert times.tolist() == tiny.open_time_ms[:FIRST_PREDICTED + 1].tolist()
    # the mark is the candle's own: the next candle is still predicted
    await rig.processor.process(feed.rows(FIRST_PREDICTED + 1, FIRST_PREDICTED + 2))
    assert rig.publisher.prediction_ids() == [_id(tiny, FIRST_PREDICTED), _id(tiny, FIRST_PREDICTED + 1)]


async def test_forming_updates_never_predict_and_give_way_to_the_closed_candle(make_rig, tiny) -> None:
    rig = make_rig(Constant())
    feed, store, row = rig.feed, rig.store, FIRST_PREDICTED
    await rig.processor.process(feed.rows(0, row))
    *updates, closed = feed.rows(row, row + 1, updates=3)
    assert [orjson.loads(m.value)["closed"] for m in updates] == [False, False, False]

    await rig.processor.process(updates)
    assert rig.publisher.last.predictions == ()
    forming = await store.forming(SYMBOL, TIMEFRAME)
    assert forming is not None and not forming.closed
    assert (forming.open_time, forming.close) == (int(tiny.open_time_ms[row]), orjson.loads(updates[-1].value)["close"])
    assert forming.close != tiny.ohlcv[row, 3]  # an update, not the final candle
    times, _ = await store.closed_candles(SYMBOL, TIMEFRAME)
    assert len(times) == row  # the forming candle is not in the window

    await rig.processor.process([closed])
    (prediction,) = rig.publisher.last.predictions
    assert (prediction.id, prediction.close) == (_id(tiny, row), tiny.ohlcv[row, 3])
    assert await store.forming(SYMBOL, TIMEFRAME) is None
    times, ohlcv = await store.closed_candles(SYMBOL, TIMEFRAME)
    assert times[-1] == tiny.open_time_ms[row] and ohlcv[-1].tolist() == tiny.ohlcv[row].tolist()

    # updates and closed candles interleaved in one batch: one prediction per closed candle, none per update
    mixed = feed.rows(row + 1, row + 4, updates=2)
    await rig.processor.process(mixed)
    assert [p.id for p in rig.publisher.last.predictions] == [_id(tiny, r) for r in range(row + 1, row + 4)]
    assert await store.forming(SYMBOL, TIMEFRAME) is None
    assert rig.processor.counts["forming"] == 3 + 6 and rig.processor.counts["predicted"] == 4


async def test_invalid_records_become_dead_letters_and_the_valid_candles_are_still_predicted(make_rig, tiny) -> None:
    rig = make_rig(Constant())
    feed, row = rig.feed, FIRST_PREDICTED
    await rig.processor.process(feed.rows(0, row))
    not_json = feed.raw(b"not json")
    (first,) = feed.rows(row, row + 1)
    negative = feed.raw(feed.payload(row + 1, low=-1.0))
    other_symbol = feed.raw(feed.payload(row + 1, symbol="ZZZUSDT"))  # keyed TINYUSDT, says ZZZUSDT
    (second,) = feed.rows(row + 1, row + 2)
    await rig.processor.process([not_json, first, negative, other_symbol, second])

    call = rig.publisher.last
    assert [p.id for p in call.predictions] == [_id(tiny, row), _id(tiny, row + 1)]
    assert [d.kind for d in call.dead_letters] == ["not_json", "bad_price", "key_mismatch"]
    for letter, message in zip(call.dead_letters, (not_json, negative, other_symbol), strict=True):
        assert (letter.source_topic, letter.partition, letter.offset) == (TOPIC, 0, message.offset)
        assert (letter.key, letter.original_text, letter.truncated) == (SYMBOL, message.value.decode(), False)
    counts = rig.processor.counts
    assert (counts["dlq.not_json"], counts["dlq.bad_price"], counts["dlq.key_mismatch"]) == (1, 1, 1)
    assert counts["dead_letters"] == 3 and counts["predicted"] == 2
    times, ohlcv = await rig.store.closed_candles(SYMBOL, TIMEFRAME)
    assert times.tolist() == tiny.open_time_ms[:row + 2].tolist() and ohlcv.min() > 0
    assert len((await rig.store.closed_candles("ZZZUSDT", TIMEFRAME))[0]) == 0


async def test_no_prediction_until_the_window_holds_min_history_candles_then_one_per_closed_candle(
        make_rig, tiny) -> None:
    rig = make_rig(Constant())
    last = FIRST_PREDICTED + 12
    for row in range(last):
        await rig.processor.process(rig.feed.rows(row, row + 1))
        expected = [_id(tiny, row)] if row >= FIRST_PREDICTED else []
        assert [p.id for p in rig.publisher.last.predictions] == expected, f"row {row}"
    assert len(rig.publisher.calls) == last
    assert rig.processor.counts["insufficient_history"] == FIRST_PREDICTED == LOOKBACK_CANDLES - 1
    assert rig.processor.counts["predicted"] == last - FIRST_PREDICTED


async def test_a_failed_publish_leaves_the_batch_unmarked_and_its_retry_publishes_the_predictions(
        make_rig, tiny) -> None:
    rig = make_rig(Constant())
    feed, row = rig.feed, FIRST_PREDICTED
    await rig.processor.process(feed.rows(0, row))
    batch = feed.rows(row, row + 2)
    rig.publisher.fail_next()
    with pytest.raises(KafkaTimeoutError):
        await rig.processor.process(batch)
    assert rig.publisher.failures == 1 and rig.publisher.prediction_ids() == []
    # what a redelivery of the two would find in the store
    probe = await rig.store.write_closed([_candle(tiny, row), _candle(tiny, row + 1)], read_count=1)
    assert [w.already_predicted for w in probe] == [False, False]

    await rig.processor.process(batch)  # the batch runs again, the broker answering now
    assert rig.publisher.prediction_ids() == [_id(tiny, row), _id(tiny, row + 1)]
    assert rig.processor.counts["predicted"] == 2 and rig.processor.counts["already_predicted"] == 0


async def test_a_batch_that_failed_and_ran_again_is_counted_once(make_rig, tiny) -> None:
    rig = make_rig(Constant())
    feed, row = rig.feed, FIRST_PREDICTED
    await rig.processor.process(feed.rows(0, row))
    before = rig.processor.counts.copy()
    batch = [feed.raw(b"not json"), *feed.rows(row, row + 2)]
    rig.publisher.fail_next()
    with pytest.raises(KafkaTimeoutError):
        await rig.processor.process(batch)
    assert rig.processor.counts == before, "a failed attempt counts nothing"
    await rig.processor.process(batch)
    added = rig.processor.counts - before
    assert added["dlq.not_json"] == added["dead_letters"] == 1
    assert added["predicted"] == 2 and added["messages"] == 3


async def test_after_a_published_batch_its_replay_publishes_nothing_new(make_rig, tiny) -> None:
    rig = make_rig(Constant())
    feed, row = rig.feed, FIRST_PREDICTED
    messages = [*feed.rows(0, row), *feed.rows(row, row + 3, updates=1)]
    await rig.processor.process(messages)
    assert rig.publisher.prediction_ids() == [_id(tiny, r) for r in range(row, row + 3)]
    probe = await rig.store.write_closed([_candle(tiny, r) for r in range(row, row + 3)], read_count=1)
    assert [w.already_predicted for w in probe] == [True, True, True]

    await rig.processor.process(messages)  # the same records again (a rebalance, a restart before commit)
    assert rig.publisher.last == Published((), (), ())
    assert rig.publisher.prediction_ids() == [_id(tiny, r) for r in range(row, row + 3)]
    assert rig.processor.counts["already_predicted"] == 3


async def test_predictions_are_the_served_model_on_each_candle_window(make_rig, tiny, golden) -> None:
    rig = make_rig(golden[LIVE])
    stop = FIRST_PREDICTED + 6
    await rig.processor.process(rig.feed.rows(0, stop))
    predictions = rig.publisher.last.predictions
    rows = list(range(FIRST_PREDICTED, stop))
    assert [p.id for p in predictions] == [_id(tiny, r) for r in rows]
    windows = np.stack([window_ending_at(tiny.open_time_ms, tiny.ohlcv, int(tiny.open_time_ms[r]),
                                         LOOKBACK_CANDLES, HOUR_MS) for r in rows])
    expected = golden[LIVE].predict(inputs_module.build_inputs(("features",), windows, tiny.open_time_ms[rows]))
    for target in TARGETS:
        want = expected[target] / expected[target].sum(axis=1, keepdims=True)  # the message's rows sum to 1
        got = np.array([[p.targets[target].p_up, p.targets[target].p_down, p.targets[target].p_none]
                        for p in predictions])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert {(p.model.version, p.variant, p.degraded, p.horizon_hours) for p in predictions} == {(LIVE, "control", False, 72)}
    assert [p.close for p in predictions] == tiny.ohlcv[rows, 3].tolist()


async def test_shadow_predictions_reach_only_the_shadow_argument(make_rig, tiny, golden) -> None:
    rig = make_rig(_golden_router(golden, shadow=True))
    feed, row = rig.feed, FIRST_PREDICTED
    await rig.processor.process(feed.rows(0, row + 4))
    await rig.processor.process(feed.rows(row + 4, row + 7, updates=1))
    live = [p for call in rig.publisher.calls for p in call.predictions]
    shadow = [p for call in rig.publisher.calls for p in call.shadow]
    assert [p.id for p in live] == [p.id for p in shadow] == [_id(tiny, r) for r in range(row, row + 7)]
    assert {(p.model.version, p.variant) for p in live} == {(LIVE, "control")}
    assert {(p.model.version, p.variant) for p in shadow} == {(SHADOW, "shadow")}
    for call in rig.publisher.calls:
        assert len(call.predictions) == len(call.shadow)
    # two different models answered, not one answer sent twice
    assert any(a.targets["2%"].p_up != b.targets["2%"].p_up for a, b in zip(live, shadow, strict=True))


async def test_a_batch_builds_its_inputs_once_for_the_live_version_and_the_shadow(
        make_rig, golden, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[tuple[str, ...], int]] = []
    build = inputs_module.build_inputs

    def counting(kinds, windows, open_time_ms):  # type: ignore[no-untyped-def]
        built.append((tuple(kinds), len(windows)))
        return build(kinds, windows, open_time_ms)

    monkeypatch.setattr(inputs_module, "build_inputs", counting)
    rig = make_rig(_golden_router(golden, shadow=True))
    await rig.processor.process(rig.feed.rows(0, FIRST_PREDICTED + 5))
    assert len(rig.publisher.last.predictions) == len(rig.publisher.last.shadow) == 5
    assert built == [(("features",), 5)]
    await rig.processor.process(rig.feed.rows(FIRST_PREDICTED + 5, FIRST_PREDICTED + 7))
    assert built == [(("features",), 5), (("features",), 2)]


def _rebuilding_rig(make_rig, store: object, series: CandleSeries) -> tuple[Rig, HistoryRebuilder, int]:
    """A rig over ``store`` whose rebuilder writes back the ``read_count`` candles (a window's worth)
    before the one that asked; (rig, rebuilder, read_count)."""
    read_count = LOOKBACK_CANDLES + 1
    rebuilder = HistoryRebuilder(store, series, read_count)
    return make_rig(Constant(), store=store, rebuilder=rebuilder), rebuilder, read_count


async def test_a_new_symbol_without_history_in_the_store_is_rebuilt_and_predicted(
        make_rig, base_settings, tiny) -> None:
    store = MemoryWindowStore(base_settings.window.retain_candles)
    rig, rebuilder, read_count = _rebuilding_rig(make_rig, store, tiny)
    row = FIRST_PREDICTED + 20
    rig.feed.rows(0, row)  # offsets 0..row-1 went by before this process started
    (message,) = rig.feed.rows(row, row + 1)
    await rig.processor.process([message])
    assert rebuilder.calls == [(SYMBOL, int(tiny.open_time_ms[row]), TOPIC, 0, message.offset)]
    assert rig.processor.counts["windows_rebuilt"] == 1
    assert rig.publisher.prediction_ids() == [_id(tiny, row)]
    times, _ = await store.closed_candles(SYMBOL, TIMEFRAME)
    assert times.tolist() == tiny.open_time_ms[row - read_count:row + 1].tolist()
    await rig.processor.process(rig.feed.rows(row + 1, row + 2))  # the window is whole now: no second rebuild
    assert len(rebuilder.calls) == 1 and rig.publisher.prediction_ids() == [_id(tiny, row), _id(tiny, row + 1)]


async def test_a_window_the_store_lost_after_it_was_complete_is_rebuilt_and_predicted(
        make_rig, base_settings, tiny) -> None:
    store = SwappableStore(base_settings.window.retain_candles)
    rig, rebuilder, read_count = _rebuilding_rig(make_rig, store, tiny)
    row = FIRST_PREDICTED + 3
    await rig.processor.process(rig.feed.rows(0, row))
    assert len(rebuilder.calls) == 1  # the symbol's first candle: one look for history, nothing before it
    assert rig.processor.counts["windows_rebuilt"] == 0
    assert rig.publisher.prediction_ids() == [_id(tiny, r) for r in range(FIRST_PREDICTED, row)]

    store.wipe()  # Redis lost the symbol's window
    (message,) = rig.feed.rows(row, row + 1)
    await rig.processor.process([message])
    assert rebuilder.calls[-1] == (SYMBOL, int(tiny.open_time_ms[row]), TOPIC, 0, message.offset)
    assert rig.processor.counts["windows_rebuilt"] == 1
    assert rig.publisher.last.predictions[0].id == _id(tiny, row) and len(rig.publisher.last.predictions) == 1
    times, _ = await store.closed_candles(SYMBOL, TIMEFRAME)
    assert times.tolist() == tiny.open_time_ms[row - read_count:row + 1].tolist()
