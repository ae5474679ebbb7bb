"""The chaos suite's parts: a private Kafka and Redis to break, workers under a restart loop, a
replay that outlives broker outages, and the comparison with a clean run.

The stack is the project's own (``bse-predict services up`` with its own state
folder and ports), never the one the rest of the suite uses, so killing it
disturbs nothing else. Workers run as ``bse-predict worker`` subprocesses under
:class:`Supervised`, a restart loop like systemd's ``Restart=always``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bse_predict.services import local_cluster
from configs.settings import Settings
from tests.support.kafka_io import read_topic
from bse_predict.stream.replay import CandleRecord
from bse_predict.connections.topics import TopicNames, ensure_topics

__all__ = ["ChaosStack", "Supervised", "CaseRun", "RunResult", "Comparison", "compare", "wait_until"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def _cli(*args: str, env: dict[str, str], timeout_s: float = 240.0) -> str:
    result = subprocess.run([sys.executable, "-m", "bse_predict.cli", *args], env={**os.environ, **env},
                            capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"bse-predict {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclass
class ChaosStack:
    """A private Kafka (``brokers`` nodes from ``kafka_port``) and Redis (AOF on) to inject faults into."""

    home: Path
    kafka_port: int
    redis_port: int
    brokers: int = 1

    @property
    def bootstrap(self) -> str:
        """Every broker's address (node N on kafka_port + 2 (N - 1)): a client started while one is down
        still finds the cluster."""
        return ",".join(f"localhost:{self.kafka_port + 2 * node}" for node in range(self.brokers))

    @property
    def env(self) -> dict[str, str]:
        return {"BSE_SERVICES_DIR": str(self.home), "BSE_KAFKA_BOOTSTRAP": self.bootstrap,
                "BSE_REDIS_URL": f"redis://localhost:{self.redis_port}/0"}

    def up(self) -> None:
        _cli("services", "up", *(["--brokers", str(self.brokers)] if self.brokers > 1 else []), env=self.env)

    def down(self) -> None:
        _cli("services", "down", env=self.env)

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_timeout=30)

    # -- faults ---------------------------------------------------------------------------------------

    def _pid(self, name: str) -> int:
        return int((self.home / f"{name}.pid").read_text())

    def _signal_and_wait(self, name: str, signum: signal.Signals, timeout_s: float = 60.0) -> None:
        pid = self._pid(name)
        os.kill(pid, signum)
        wait_until(lambda: not _alive(pid), timeout_s, f"{name} (pid {pid}) to exit after {signum.name}", 0.1)

    def restart_redis(self) -> None:
        """SHUTDOWN by SIGTERM (the AOF is flushed), then start it again on the same files."""
        self._signal_and_wait("redis", signal.SIGTERM)
        self.up()

    def kill_redis_clients(self) -> int:
        with self.redis() as client:
            return int(client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))

    def hang_redis(self, seconds: float) -> None:
        """Redis answers nothing for ``seconds`` (SIGSTOP, then SIGCONT): what ``DEBUG SLEEP`` does, which
        Redis 7 refuses unless started with ``enable-debug-command``."""
        pid = self._pid("redis")
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)

    def wipe_redis(self) -> None:
        with self.redis() as client:
            client.flushall()

    def stop_broker(self, node: int = 1, signum: signal.Signals = signal.SIGTERM) -> None:
        """Stop broker ``node`` (1-based) with ``signum`` and wait until its process is gone."""
        self._signal_and_wait("kafka" if self.brokers == 1 else f"kafka-{node}", signum, timeout_s=120)

    def start_brokers(self) -> None:
        """Start what is down (one node or every service) on its old data."""
        if self.brokers == 1:
            self.up()
            return
        settings = Settings(kafka_bootstrap=self.bootstrap, redis_url=self.env["BSE_REDIS_URL"])
        previous = os.environ.get("BSE_SERVICES_DIR")
        os.environ["BSE_SERVICES_DIR"] = str(self.home)  # where the cluster's files are
        try:
            for node in range(1, self.brokers + 1):
                if local_cluster.broker_pid(settings, node) is None:
                    local_cluster.start_broker(settings, node, progress=lambda line: None)
            local_cluster.wait_for_full_isr(settings)
        finally:
            if previous is None:
                os.environ.pop("BSE_SERVICES_DIR")
            else:
                os.environ["BSE_SERVICES_DIR"] = previous


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours is dead too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class Supervised:
    """``bse-predict worker`` under a restart loop: whenever it exits it is started again after
    ``restart_delay_s``, until :meth:`stop`. Every exit code is kept."""

    def __init__(self, env: dict[str, str], log_path: Path, args: Sequence[str] = (),
                 restart_delay_s: float = 1.0) -> None:
        self._env = {**os.environ, **env}
        self._args = tuple(args)
        self.log_path = log_path
        self._delay_s = restart_delay_s
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.exit_codes: list[int] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Supervised:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                log = self.log_path.open("ab")
                self._process = subprocess.Popen([sys.executable, "-m", "bse_predict.cli", "worker", *self._args],
                                                 env=self._env,
                                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                                 cwd=REPO_ROOT)
            code = self._process.wait()
            log.close()
            if self._stopping.is_set():
                return
            self.exit_codes.append(code)
            self._stopping.wait(self._delay_s)

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def send(self, signum: signal.Signals) -> bool:
        """Signal the running worker; False when none is running at the moment."""
        with self._lock:
            pid = self.pid
            if pid is None:
                return False
            os.killpg(pid, signum)
            return True

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self._thread.join(30)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


async def _replay_through_outages(bootstrap: str, topic: str, records: Sequence[CandleRecord], rate_per_s: float,
                                  done: threading.Event) -> None:
    """Send ``records`` in order at ``rate_per_s`` closed candles a second. A send that fails or hangs
    (the broker is down or restarting) is sent again through a fresh producer until it is acknowledged:
    an idempotent producer that lost its broker mid-batch may never recover its sequence numbers."""

    async def fresh() -> AIOKafkaProducer:
        while True:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all", enable_idempotence=True,
                                        request_timeout_ms=10_000, retry_backoff_ms=500)
            try:
                await asyncio.wait_for(producer.start(), 15)
                return producer
            except (KafkaError, OSError, asyncio.TimeoutError):
                await _stop_quietly(producer)
                await asyncio.sleep(1.0)

    producer = await fresh()
    try:
        started = time.perf_counter()
        closed = 0
        for record in records:
            while True:
                try:
                    await asyncio.wait_for(producer.send_and_wait(topic, record.payload, key=record.symbol.encode()), 20)
                    break
                except (KafkaError, OSError, asyncio.TimeoutError):
                    await _stop_quietly(producer)
                    producer = await fresh()
            if record.closed:
                closed += 1
                delay = started + closed / rate_per_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
    finally:
        await _stop_quietly(producer)
        done.set()


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 15)
    except (KafkaError, OSError, asyncio.TimeoutError):
        pass  # a producer that cannot reach its broker is dropped anyway


@dataclass
class RunResult:
    """What one run left: predictions (raw count and deduplicated by id), outcomes by (id, target),
    the Redis windows, how often the workers exited, and when the stream caught up."""

    raw_predictions: int
    predictions: dict[str, dict]
    outcomes: dict[tuple[str, str], dict]
    windows: dict[str, list[tuple[bytes, float]]]
    exit_codes: list[int]
    replay_s: float
    caught_up_s: float
    logs: list[Path]


@dataclass
class CaseRun:
    """One run of the candles through supervised workers while ``fault`` runs in this thread."""

    stack: ChaosStack
    base: Settings
    records: Sequence[CandleRecord]
    expected_predictions: int
    expected_outcomes: int | None
    log_dir: Path
    rate_per_s: float = 40.0
    workers: int = 1
    config: dict = field(default_factory=dict)
    settle_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        self.prefix = f"c{uuid.uuid4().hex[:8]}."
        self.settings = self.base.model_copy(update={"topic_prefix": self.prefix})
        self.names = TopicNames.of(self.settings)
        config_path = self.log_dir / f"{self.prefix}config.yaml"
        config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        self.worker_env = {**self.stack.env, "BSE_TOPIC_PREFIX": self.prefix,
                           "BSE_MODELS_DIR": str(self.settings.models_dir)}
        self.worker_args = ("--config", str(config_path))
        self.supervisors: list[Supervised] = []
        self.replay_done = threading.Event()
        self._last_outcomes = -1

    def start_worker(self, name: str) -> Supervised:
        supervisor = Supervised(self.worker_env, self.log_dir / f"{self.prefix}{name}.log", self.worker_args).start()
        self.supervisors.append(supervisor)
        return supervisor

    def run(self, fault: Callable[[CaseRun], None] | None = None) -> RunResult:
        asyncio.run(ensure_topics(self.settings))
        for i in range(self.workers):
            self.start_worker(f"worker-{i + 1}")
        started = time.monotonic()
        replaying = threading.Thread(target=asyncio.run, args=(_replay_through_outages(
            self.settings.kafka_bootstrap, self.names.candles, self.records, self.rate_per_s, self.replay_done),))
        replaying.start()
        try:
            if fault is not None:
                fault(self)
            replaying.join()
            replay_s = time.monotonic() - started
            wait_until(self._complete, self.settle_timeout_s,
                       f"{self.expected_predictions} predictions and {self.expected_outcomes} outcomes", poll_s=2.0)
            caught_up_s = time.monotonic() - started
        except AssertionError as failure:
            raise AssertionError(f"{failure}\n{self.tails()}") from None
        finally:
            for supervisor in self.supervisors:
                supervisor.stop()
        return RunResult(raw_predictions=len(self._read(self.names.predictions)),
                         predictions=_by_id(self._read(self.names.predictions)),
                         outcomes=_outcomes(self._read(self.names.outcomes)),
                         windows=self._windows(), exit_codes=[c for s in self.supervisors for c in s.exit_codes],
                         replay_s=replay_s, caught_up_s=caught_up_s, logs=[s.log_path for s in self.supervisors])

    def _read(self, topic: str) -> list[dict]:
        return [orjson.loads(r.value) for r in asyncio.run(read_topic(self.settings.kafka_bootstrap, topic, 1500))]

    def _complete(self) -> bool:
        """All expected predictions and outcomes are there; with ``expected_outcomes`` None (the clean
        run), the outcome count has stopped moving between two polls."""
        try:
            predictions = len(_by_id(self._read(self.names.predictions)))
            outcomes = len(_outcomes(self._read(self.names.outcomes)))
        except KafkaError:
            return False
        if self.expected_outcomes is None:
            steady, self._last_outcomes = outcomes == self._last_outcomes, outcomes
            return predictions >= self.expected_predictions and steady
        return predictions >= self.expected_predictions and outcomes >= self.expected_outcomes

    def _windows(self) -> dict[str, list[tuple[bytes, float]]]:
        with self.stack.redis() as client:
            keys = sorted(k.decode() for k in client.scan_iter(match=f"{self.prefix}bse:*:win", count=1000))
            return {key.removeprefix(self.prefix): client.zrange(key, 0, -1, withscores=True) for key in keys}

    def tails(self) -> str:
        return "\n".join(f"--- {s.log_path.name} (exits {s.exit_codes})\n{s.log_tail()}" for s in self.supervisors)


def _by_id(messages: list[dict]) -> dict[str, dict]:
    return {m["id"]: m for m in messages}


def _outcomes(messages: list[dict]) -> dict[tuple[str, str], dict]:
    return {(m["id"], m["target"]): m for m in messages}


@dataclass
class Comparison:
    lost_predictions: int
    extra_predictions: int
    changed_predictions: int
    lost_outcomes: int
    changed_outcomes: int
    windows_equal: bool

    @property
    def clean(self) -> bool:
        return not (self.lost_predictions or self.extra_predictions or self.changed_predictions
                    or self.lost_outcomes or self.changed_outcomes) and self.windows_equal


_PREDICTION_FIELDS = ("symbol", "open_time", "close", "targets", "model", "variant", "degraded", "regime")
_OUTCOME_FIELDS = ("outcome", "resolved_at", "p_up", "p_down", "p_none", "model", "variant")


def compare(clean: RunResult, faulty: RunResult) -> Comparison:
    """The faulty run against the clean one: same ids with the same values (latency aside), the same
    outcomes, the same Redis windows."""
    shared = clean.predictions.keys() & faulty.predictions.keys()
    changed = sum(1 for i in shared if any(clean.predictions[i].get(f) != faulty.predictions[i].get(f)
                                           for f in _PREDICTION_FIELDS))
    shared_outcomes = clean.outcomes.keys() & faulty.outcomes.keys()
    changed_outcomes = sum(1 for k in shared_outcomes
                           if any(clean.outcomes[k].get(f) != faulty.outcomes[k].get(f) for f in _OUTCOME_FIELDS))
    return Comparison(lost_predictions=len(clean.predictions.keys() - faulty.predictions.keys()),
                      extra_predictions=len(faulty.predictions.keys() - clean.predictions.keys()),
                      changed_predictions=changed,
                      lost_outcomes=len(clean.outcomes.keys() - faulty.outcomes.keys()),
                      changed_outcomes=changed_outcomes,
                      windows_equal=clean.windows == faulty.windows)
