"""The scheduler's pure parts: the cron schedule, which control.events start a retrain, and what each
step says; and the command's one-line refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from configs.settings import load_settings
from bse_predict.retrain.report import ops_note, retrain_event
from bse_predict.retrain.schedule import next_run_at, trigger_of

T0 = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)  # a Wednesday


def test_the_next_run_follows_the_cron_schedule_in_utc() -> None:
    assert next_run_at("0 3 * * 0", T0) == datetime(2026, 3, 8, 3, 0, tzinfo=UTC)  # the next Sunday 03:00
    assert next_run_at("0 */6 * * *", T0) == datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    assert next_run_at("0 */6 * * *", datetime(2026, 3, 4, 12, 0, tzinfo=UTC)) == datetime(2026, 3, 4, 18, 0, tzinfo=UTC)
    assert next_run_at(None, T0) is None
    with pytest.raises(ValueError, match="aware"):
        next_run_at("0 3 * * 0", T0.replace(tzinfo=None))


def test_a_bad_schedule_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="cron"):
        load_settings(retrain={"schedule": "every sunday"})
    with pytest.raises(ValidationError, match="cron"):
        load_settings(retrain={"schedule": "0 0 3 * * 0"})  # six fields: seconds are not a thing here
    assert load_settings(retrain={"schedule": None}).retrain.schedule is None


DRIFT = {"status": "drift", "reason": "rsi_14: PSI 0.4 > 0.25", "version": "v1"}
LIVE_WORSE = {"status": "challenger_decision", "verdict": "challenger_worse", "challenger_stream": "live",
              "reason": "challenger worse (sent rollback)"}
SHADOW_WORSE = {**LIVE_WORSE, "challenger_stream": "shadow"}
SHADOW_BETTER = {**SHADOW_WORSE, "verdict": "challenger_better"}


@pytest.mark.parametrize(("event", "triggers", "expected"), [
    (DRIFT, ("drift",), "drift"),
    (DRIFT, ("live_regression",), None),
    (LIVE_WORSE, ("drift", "live_regression"), "live_regression"),
    (SHADOW_WORSE, ("drift", "live_regression"), None),
    (SHADOW_WORSE, ("challenger_worse",), "challenger_worse"),
    (SHADOW_BETTER, ("drift", "live_regression", "challenger_worse"), None),
    ({"status": "applied", "command": "shadow"}, ("drift", "live_regression"), None),
    ({"status": "retrain_failed", "reason": "drift"}, ("drift",), None),
])
def test_which_events_trigger_a_retrain(event: dict, triggers: tuple, expected: str | None) -> None:
    found = trigger_of(event, triggers)
    assert (found.split(":")[0] if found else None) == expected


def test_an_event_and_its_note() -> None:
    event = retrain_event("retrain_failed", "refused <worse> & so on", T0, "abc", "r20260304T103000", step="gate")
    assert event["status"] == "retrain_failed" and event["at"] == "2026-03-04T10:30:00.000Z" and event["step"] == "gate"
    note = ops_note(event)
    assert "<b>failed</b>" in note and "&lt;worse&gt; &amp;" in note and "r20260304T103000" in note
    with pytest.raises(ValueError):
        retrain_event("retrain_exploded", "", T0, "abc", None)


def test_the_command_has_help_and_refuses_in_one_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from bse_predict.cli import app

    runner = CliRunner()
    helped = runner.invoke(app, ["retrain", "--help"])
    assert helped.exit_code == 0 and "--schedule" in helped.output and "--config" in helped.output
    env = {"BSE_MODELS_DIR": str(tmp_path), "BSE_CONTROL_SECRET": "x" * 40}
    no_archive = runner.invoke(app, ["retrain"], env=env)
    assert no_archive.exit_code == 2 and "retrain.archive names no candle files" in no_archive.output
    unsigned = runner.invoke(app, ["retrain", "--archive", str(tmp_path)], env={**env, "BSE_CONTROL_SECRET": ""})
    assert unsigned.exit_code == 2 and "BSE_CONTROL_SECRET is not set" in unsigned.output
    assert unsigned.output.count("error:") == 1
