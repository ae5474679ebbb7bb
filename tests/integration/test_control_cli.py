"""``bse-predict control ...`` against a real worker: it waits for its own message's answer on
control.events and exits with it (0 applied, 1 refused, 3 no answer); keys named by id, one of them
accepted only through BSE_CONTROL_KEYS (a rotation in progress)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from configs.settings import Settings
from tests.support.kafka_io import read_topic
from tests.support.worker_process import WorkerProcess, service_env

pytestmark = pytest.mark.integration

SOURCE = "v-test"
SIGNING = "cli-signing-secret-at-least-32-characters"
ROTATED_IN = "cli-rotated-in-secret-at-least-32-characters"
CLI = [sys.executable, "-m", "bse_predict.cli", "control"]


def _cli(env: dict[str, str], *args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = subprocess.run([*CLI, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout_s)
    print(f"control {' '.join(args)}: exit {done.returncode} after {time.monotonic() - started:.1f} s")
    return done


def _events(settings: Settings) -> list[dict]:
    records = asyncio.run(read_topic(settings.kafka_bootstrap, settings.topic("control.events"), idle_ms=700))
    return [json.loads(r.value) for r in records]


def test_the_control_command_waits_for_its_answer_and_exits_with_it(control_settings: Settings, tmp_path: Path) -> None:
    settings = control_settings
    worker_env = {**service_env(settings), "BSE_CONTROL_SECRET": SIGNING, "BSE_CONTROL_KEYS": f"k2={ROTATED_IN}"}
    sender = {**service_env(settings), "BSE_CONTROL_SECRET": SIGNING}

    # No worker reads this prefix: the command says so after --wait-s, exit 3.
    nobody = _cli({**sender, "BSE_TOPIC_PREFIX": f"{settings.topic_prefix}nobody."}, "rollback", "--wait-s", "2")
    assert nobody.returncode == 3, nobody
    assert "no worker answered within 2 s" in nobody.stderr and nobody.stderr.count("error:") == 1

    with WorkerProcess(worker_env, tmp_path / "w.log") as worker:
        unknown = _cli(sender, "promote", "v-nowhere")
        assert unknown.returncode == 1, (unknown, worker.log_tail())
        assert "error: refused promote" in unknown.stderr and "unknown version 'v-nowhere'" in unknown.stderr
        assert SIGNING not in unknown.stdout + unknown.stderr

        applied = _cli(sender, "fallback", SOURCE)
        assert applied.returncode == 0, (applied, worker.log_tail())
        assert applied.stdout.startswith("applied fallback id=") and "fallback v-test" in applied.stdout

        nothing = _cli(sender, "rollback")  # refused by the state machine, not by the checks
        assert nothing.returncode == 1 and "nothing_to_roll_back" in nothing.stderr, nothing

        # Signed with a key the worker accepts through BSE_CONTROL_KEYS only; then with one it does not hold.
        rotated = _cli({**sender, "BSE_CONTROL_SECRET": ROTATED_IN, "BSE_CONTROL_KEY_ID": "k2"}, "shadow", "off")
        assert rotated.returncode == 0, rotated
        stranger = _cli({**sender, "BSE_CONTROL_SECRET": ROTATED_IN, "BSE_CONTROL_KEY_ID": "k9"}, "shadow", "off")
        assert stranger.returncode == 1 and "unknown_key: key id 'k9'" in stranger.stderr, stranger

        sent = _cli(sender, "fallback", "off", "--no-wait")
        assert sent.returncode == 0 and sent.stdout.startswith("sent fallback"), sent

    events = {e["id"]: e for e in _events(settings) if e.get("id")}
    key_ids = [(e["command"], e["status"], e.get("key_id")) for e in events.values()]
    assert ("shadow", "applied", "k2") in key_ids and ("fallback", "applied", "primary") in key_ids, key_ids
    assert ("shadow", "refused", None) in key_ids  # refused before it was read: the id it named is in the reason
