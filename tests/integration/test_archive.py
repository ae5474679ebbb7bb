"""``bse-predict archive`` on the real Kafka, as real processes: closed candles with duplicates, in-progress
updates and an invalid record; the archiver dies right after a durable write and before its commit, is
restarted, is SIGKILLed mid-run, is restarted again. The dataset then holds each closed candle exactly once
(in the files themselves, not only after the reader's dedupe) with the last value sent, and at every stop
the group's committed offsets never pass a candle that is not in a durable file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from configs.settings import Settings
from bse_predict.archive.run import CRASH_HOOK_EXIT_CODE
from bse_predict.candles.files import read_candle_files
from bse_predict.connections.clients import kafka_options
from bse_predict.connections.topics import TopicNames, ensure_topics
from tests.support.worker_process import service_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000
START_MS = 1_738_350_000_000 - 1_738_350_000_000 % HOUR_MS  # 2025-01-31 19:00 UTC: the hours cross into February
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")
GROUP = "archive-test"

Key = tuple[str, int]  # (symbol, open_time)


def _payload(symbol: str, open_time: int, volume: float, closed: bool) -> bytes:
    return orjson.dumps({"symbol": symbol, "timeframe": "1h", "open_time": open_time, "open": 100.0, "high": 101.0,
                         "low": 99.0, "close": 100.5, "volume": volume, "closed": closed})


class Sent:
    """Every record produced, with its partition and offset."""

    def __init__(self) -> None:
        self.closed: list[tuple[Key, float, int, int]] = []  # key, volume, partition, offset
        self.ends: dict[int, int] = {}  # partition -> the offset after its last record, any kind

    def saw(self, partition: int, offset: int) -> None:
        self.ends[partition] = max(self.ends.get(partition, 0), offset + 1)

    def last_values(self) -> dict[Key, float]:
        return {key: volume for key, volume, _, _ in self.closed}  # in send order: the last one wins

    def newest_offsets_below(self, committed: dict[int, int]) -> dict[Key, int]:
        """For each candle, the offset of its newest closed record before its partition's commit."""
        found: dict[Key, int] = {}
        for key, _, partition, offset in self.closed:
            if offset < committed.get(partition, 0):
                found[key] = max(found.get(key, -1), offset)
        return found


async def _produce(settings: Settings, sent: Sent, hours: range, version: float, updates: int = 2,
                   invalid: bool = False) -> None:
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    topic = TopicNames.of(settings).candles
    try:
        for hour in hours:
            for symbol in SYMBOLS:
                open_time = START_MS + hour * HOUR_MS
                for update in range(updates):  # in-progress updates: never archived
                    meta = await producer.send_and_wait(topic, _payload(symbol, open_time, 1e6 + update, False),
                                                        key=symbol.encode())
                    sent.saw(meta.partition, meta.offset)
                volume = version + hour
                meta = await producer.send_and_wait(topic, _payload(symbol, open_time, volume, True),
                                                    key=symbol.encode())
                sent.closed.append(((symbol, open_time), volume, meta.partition, meta.offset))
                sent.saw(meta.partition, meta.offset)
        if invalid:
            meta = await producer.send_and_wait(topic, b"{not json", key=SYMBOLS[0].encode())
            sent.saw(meta.partition, meta.offset)
    finally:
        await producer.stop()


async def _committed(settings: Settings) -> dict[int, int]:
    topic = TopicNames.of(settings).candles
    consumer = AIOKafkaConsumer(**kafka_options(settings), group_id=f"{settings.topic_prefix}{GROUP}",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = range(settings.topics.partitions)
        found = {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
        return {p: o for p, o in found.items() if o is not None}
    finally:
        await consumer.stop()


def _rows_in_files(root: Path) -> list[tuple[Key, float, int]]:
    """Every row of every file, read file by file (no dedupe): key, volume, offset."""
    rows = []
    for path in sorted(root.rglob("*.parquet")):
        assert not path.name.startswith("."), f"a temporary file is visible: {path}"
        symbol = path.parent.parent.name.removeprefix("symbol=")
        for row in pq.read_table(path).to_pylist():
            rows.append(((symbol, row["open_time_ms"]), row["volume"], row["kafka_offset"]))
    return rows


def _assert_commits_never_pass_the_files(root: Path, sent: Sent, committed: dict[int, int]) -> None:
    on_disk: dict[Key, int] = {}
    for key, _, offset in _rows_in_files(root):
        on_disk[key] = max(on_disk.get(key, -1), offset)
    for key, offset in sent.newest_offsets_below(committed).items():
        assert on_disk.get(key, -1) >= offset, (
            f"{key}: committed past offset {offset}, but the files hold {on_disk.get(key)}")


class Archiver:
    def __init__(self, settings: Settings, out: Path, log_path: Path, **overrides: str) -> None:
        self.env = {**os.environ, **service_env(settings), "BSE_ARCHIVE__GROUP_ID": GROUP,
                    "BSE_ARCHIVE__FLUSH_INTERVAL_S": "0.5", "BSE_ARCHIVE__SESSION_TIMEOUT_S": "6",
                    "BSE_ARCHIVE__POLL_TIMEOUT_MS": "200", **overrides}
        self.log_path = log_path
        self.out = out
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Archiver:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "bse_predict.cli", "archive", "--out", str(self.out)],
                                            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            raise AssertionError(f"archive still running after {timeout_s} s:\n{self.log()[-4000:]}") from None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signum)


def _wait_for_commits(settings: Settings, ends: dict[int, int], archiver: Archiver, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while (committed := asyncio.run(_committed(settings))) != ends:
        if time.monotonic() > deadline:
            archiver.signal(signal.SIGKILL)
            raise AssertionError(f"committed {committed}, not {ends}, after {timeout_s} s:\n{archiver.log()[-4000:]}")
        time.sleep(0.2)


def _wait_for_files_holding(out: Path, sent: Sent, archiver: Archiver, timeout_s: float = 120) -> None:
    """Until the files hold every closed candle sent so far, each once, with its last value: a flush of
    everything read is durable and the files it superseded are gone."""
    expected = sent.last_values()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            rows = _rows_in_files(out)
        except FileNotFoundError:  # a superseded file removed while it was read
            rows = []
        if len(rows) == len(expected) and {key: volume for key, volume, _ in rows} == expected:
            return
        if time.monotonic() > deadline:
            archiver.signal(signal.SIGKILL)
            raise AssertionError(f"the files do not hold what was sent after {timeout_s} s:\n{archiver.log()[-4000:]}")
        time.sleep(0.1)


@pytest.mark.timeout(300)
def test_each_closed_candle_once_with_its_last_value_across_a_crash_before_commit_and_a_kill(
        isolated: Settings, tmp_path: Path) -> None:
    settings = isolated
    out, log_path = tmp_path / "archive", tmp_path / "archive.log"
    asyncio.run(ensure_topics(settings))
    sent = Sent()
    asyncio.run(_produce(settings, sent, range(0, 6), version=1.0, invalid=True))

    # 1. The archiver writes its first flush durably, then dies before committing it (the test hook).
    first = Archiver(settings, out, log_path, BSE_ARCHIVE__EXIT_AFTER_DURABLE_WRITES="1").start()
    assert first.wait(120) == CRASH_HOOK_EXIT_CODE, first.log()[-4000:]
    written = _rows_in_files(out)
    assert written, "the flush before the crash wrote nothing"
    committed = asyncio.run(_committed(settings))
    assert committed == {}, f"committed {committed} although the process died before its commit"
    _assert_commits_never_pass_the_files(out, sent, committed)

    # 2. More candles, and new values for candles already written (the last offset must win).
    asyncio.run(_produce(settings, sent, range(3, 10), version=2.0))
    second = Archiver(settings, out, log_path).start()
    ends = dict(sent.ends)
    _wait_for_commits(settings, ends, second)
    second.signal(signal.SIGKILL)  # no goodbye: whatever it held since its last commit is read again
    assert second.wait(30) == -signal.SIGKILL
    _assert_commits_never_pass_the_files(out, sent, asyncio.run(_committed(settings)))

    # 3. Killed mid-run, right after its flush reached the files; restarted; stopped with SIGTERM (a last flush).
    asyncio.run(_produce(settings, sent, range(8, 14), version=3.0, invalid=True))
    third = Archiver(settings, out, log_path).start()
    _wait_for_files_holding(out, sent, third)
    third.signal(signal.SIGKILL)
    third.wait(30)
    _assert_commits_never_pass_the_files(out, sent, asyncio.run(_committed(settings)))
    asyncio.run(_produce(settings, sent, range(12, 16), version=4.0))
    fourth = Archiver(settings, out, log_path).start()
    ends = dict(sent.ends)
    _wait_for_commits(settings, ends, fourth)
    fourth.signal(signal.SIGTERM)
    assert fourth.wait(60) == 0, fourth.log()[-4000:]
    assert asyncio.run(_committed(settings)) == ends

    # Each closed candle exactly once in the files, with the last value sent; nothing in progress archived.
    rows = _rows_in_files(out)
    keys = [key for key, _, _ in rows]
    assert len(keys) == len(set(keys)), "a candle is in the dataset twice"
    expected = sent.last_values()
    assert {key: volume for key, volume, _ in rows} == expected
    assert all(volume < 1e6 for _, volume, _ in rows)
    assert "not_json" in fourth.log() and "skipped an invalid record" in fourth.log()
    months = sorted({p.parent.name for p in out.rglob("*.parquet")})
    assert months == ["month=2025-01", "month=2025-02"]

    # And the archive reads as candle files.
    series = {s.symbol: s for s in read_candle_files([out])}
    assert sorted(series) == sorted(SYMBOLS)
    for symbol, one in series.items():
        want = sorted((t, v) for (s, t), v in expected.items() if s == symbol)
        assert [(int(t), float(v)) for t, v in zip(one.open_time_ms, one.ohlcv[:, 4], strict=True)] == want
        assert one.duplicates_dropped == 0
