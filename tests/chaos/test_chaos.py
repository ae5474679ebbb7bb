"""Real faults in the real Kafka and Redis while candles stream; nothing may be lost.

Each case replays the same 330 h of BTC, ETH and SOL (990 closed candles, each
after an in-progress update) through workers under a restart loop while the
fault happens, then checks the predictions topic after dedupe by id against the
clean run of the same candles: the same ids with the same values, the same
outcomes, the same Redis windows.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from configs.settings import Settings
from tests.chaos.conftest import CHAOS_CONFIG, LOAD, new_case
from tests.chaos.harness import CaseRun, ChaosStack, RunResult, Supervised, compare
from bse_predict.stream.replay import CandleRecord

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


def _until_replayed(case: CaseRun, every_s: float, action: Callable[[], object], first_after_s: float = 3.0) -> int:
    """Run ``action`` every ``every_s`` seconds while the replay lasts; how many times it ran."""
    time.sleep(first_after_s)
    count = 0
    while not case.replay_done.is_set():
        action()
        count += 1
        case.replay_done.wait(every_s)
    return count


def _check(case: CaseRun, clean: RunResult, faulty: RunResult, fault: str, load: str,
           results_table: list[dict]) -> None:
    verdict = compare(clean, faulty)
    results_table.append({
        "fault": fault, "load": load, "lost_predictions": verdict.lost_predictions,
        "lost_outcomes": verdict.lost_outcomes, "changed": verdict.changed_predictions + verdict.changed_outcomes,
        "windows_equal": verdict.windows_equal, "duplicates": faulty.raw_predictions - len(faulty.predictions),
        "exits": len(faulty.exit_codes), "recovery_s": max(0.0, faulty.caught_up_s - faulty.replay_s),
    })
    assert verdict.clean, f"{fault}: {verdict}\n{case.tails()}"




@pytest.fixture
def case_of(stack: ChaosStack, chaos_settings: Settings, records: list[CandleRecord], chaos_dir: Path,
            clean_run: RunResult) -> Callable[..., CaseRun]:
    def make(**options: object) -> CaseRun:
        return new_case(stack, chaos_settings, records, chaos_dir, expected_outcomes=len(clean_run.outcomes),
                        **options)
    return make


def test_sigkill_at_random_points_ten_times(case_of: Callable[..., CaseRun], clean_run: RunResult,
                                             results_table: list[dict]) -> None:
    case = case_of(rate_per_s=18)
    rng = random.Random(11)

    def fault(case: CaseRun) -> None:
        kills = 0
        time.sleep(4)
        while kills < 10:
            time.sleep(rng.uniform(2.0, 5.0))
            kills += case.supervisors[0].send(signal.SIGKILL)

    result = case.run(fault)
    assert len(result.exit_codes) >= 10
    _check(case, clean_run, result, "SIGKILL of the worker at random points, x10", LOAD, results_table)


def test_exceptions_injected_into_processing(case_of: Callable[..., CaseRun], clean_run: RunResult,
                                             results_table: list[dict]) -> None:
    config = {"worker": {**CHAOS_CONFIG["worker"],
                         "faults": {**CHAOS_CONFIG["worker"]["faults"], "inject_failure_probability": 0.05}}}
    case = case_of(rate_per_s=60, config=config)
    result = case.run()
    assert "injected fault" in result.logs[0].read_text()
    _check(case, clean_run, result, "exception injected at a random stage (5% each)", LOAD, results_table)


def test_redis_restarted(case_of: Callable[..., CaseRun], clean_run: RunResult, stack: ChaosStack,
                         results_table: list[dict]) -> None:
    case = case_of(rate_per_s=40)
    restarts = []
    result = case.run(lambda c: restarts.append(_until_replayed(c, 9.0, stack.restart_redis, first_after_s=6.0)))
    assert restarts[0] >= 1
    _check(case, clean_run, result, f"Redis restarted (AOF on), x{restarts[0]}", LOAD, results_table)


def test_redis_client_connections_killed(case_of: Callable[..., CaseRun], clean_run: RunResult, stack: ChaosStack,
                                         results_table: list[dict]) -> None:
    case = case_of(rate_per_s=40)
    kills = []
    result = case.run(lambda c: kills.append(_until_replayed(c, 1.3, stack.kill_redis_clients)))
    assert kills[0] >= 10
    _check(case, clean_run, result, f"Redis client connections killed every 1.3 s, x{kills[0]}", LOAD, results_table)


def test_redis_hung_past_the_timeout(case_of: Callable[..., CaseRun], clean_run: RunResult, stack: ChaosStack,
                                     results_table: list[dict]) -> None:
    case = case_of(rate_per_s=40)
    hangs = []
    # 18 s: past the client's own retries (3 tries of 5 s), so the batch fails and is retried in place
    result = case.run(lambda c: hangs.append(_until_replayed(c, 4.0, lambda: stack.hang_redis(18.0),
                                                             first_after_s=6.0)))
    assert hangs[0] >= 1
    assert "batch failed (redis fault" in result.logs[0].read_text()
    _check(case, clean_run, result, f"Redis hung 18 s (SIGSTOP; client timeout 5 s, 3 tries), x{hangs[0]}", LOAD,
           results_table)


def test_redis_wiped(case_of: Callable[..., CaseRun], clean_run: RunResult, stack: ChaosStack,
                     results_table: list[dict]) -> None:
    case = case_of(rate_per_s=40)
    result = case.run(lambda c: (time.sleep(14.0), stack.wipe_redis()))
    assert "Redis lost it; rebuilding" in result.logs[0].read_text()
    _check(case, clean_run, result, "Redis wiped (FLUSHALL) mid-stream", LOAD, results_table)


def test_broker_restarted(case_of: Callable[..., CaseRun], clean_run: RunResult, stack: ChaosStack,
                          results_table: list[dict]) -> None:
    case = case_of(rate_per_s=40)

    def fault(case: CaseRun) -> None:
        time.sleep(10.0)
        stack.stop_broker()
        stack.start_brokers()

    result = case.run(fault)
    _check(case, clean_run, result, "Kafka broker restarted", LOAD, results_table)


def test_broker_down_for_90_seconds(case_of: Callable[..., CaseRun], clean_run: RunResult, stack: ChaosStack,
                                    results_table: list[dict]) -> None:
    case = case_of(rate_per_s=40, settle_timeout_s=400.0)

    def fault(case: CaseRun) -> None:
        time.sleep(10.0)
        stack.stop_broker()
        time.sleep(90.0)
        stack.start_brokers()

    result = case.run(fault)
    _check(case, clean_run, result, "Kafka broker down for 90 s", LOAD, results_table)


def test_a_frozen_worker_loses_its_partitions_and_wakes_up(case_of: Callable[..., CaseRun], clean_run: RunResult,
                                                           results_table: list[dict]) -> None:
    case = case_of(rate_per_s=40, workers=2)

    def fault(case: CaseRun) -> None:
        time.sleep(10.0)
        frozen = case.supervisors[0]
        assert frozen.send(signal.SIGSTOP)
        time.sleep(CHAOS_CONFIG["worker"]["session_timeout_s"] + 8.0)  # its partitions move to the other
        frozen.send(signal.SIGCONT)

    result = case.run(fault)
    _check(case, clean_run, result, "worker frozen (SIGSTOP) past its session timeout, then SIGCONT",
           f"{LOAD}, 2 workers", results_table)


def test_two_workers_and_a_rebalance_every_few_seconds(case_of: Callable[..., CaseRun], clean_run: RunResult,
                                                       results_table: list[dict]) -> None:
    case = case_of(rate_per_s=40)
    changes = []

    def fault(case: CaseRun) -> None:
        joining: Supervised | None = None

        def flip() -> None:
            nonlocal joining
            if joining is None:
                joining = case.start_worker(f"joiner-{len(changes)}")
            else:
                joining.stop()  # SIGTERM: it leaves the group
                joining = None
            changes.append(1)

        _until_replayed(case, 5.0, flip)
        if joining is not None:
            joining.stop()

    result = case.run(fault)
    assert len(changes) >= 4
    _check(case, clean_run, result, f"a second worker joins and leaves every 5 s ({len(changes)} rebalances)",
           f"{LOAD}, 1-2 workers", results_table)


def test_one_of_three_brokers_killed(cluster: ChaosStack, chaos_settings: Settings, records: list[CandleRecord],
                                     chaos_dir: Path, clean_run: RunResult, results_table: list[dict]) -> None:
    case = new_case(cluster, chaos_settings, records, chaos_dir, expected_outcomes=len(clean_run.outcomes),
                    rate_per_s=40)

    def fault(case: CaseRun) -> None:
        time.sleep(10.0)
        cluster.stop_broker(2, signal.SIGKILL)
        case.replay_done.wait(15.0)
        cluster.start_brokers()

    result = case.run(fault)
    _check(case, clean_run, result, "one of three brokers killed (SIGKILL; replication 3, min.insync 2, acks=all)",
           f"{LOAD}, 3 brokers", results_table)
