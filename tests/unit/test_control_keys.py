"""Control keys: the secret's minimum length at start-up, key ids, a rotation, ``control rotate``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from bse_predict.cli import app
from configs.settings import Settings, load_settings, parse_control_keys
from bse_predict.control.state_machine import CommandReceived, ControlState, step
from bse_predict.control.messages import ControlKeys, ControlRefused, build_message, encode_message, verify_message
from bse_predict.integrity.signing import sign_fields
from bse_predict.control.verification import control_keys
from bse_predict.control.state_log import ControlStateLog, decode_state_record, encode_state_record

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
OLD = "old-secret-" + "o" * 30  # 41 characters
NEW = "new-secret-" + "n" * 30
OTHER = "another-secret-" + "x" * 30


def _raw(secret: str, key_id: str | None, command: str = "rollback", args: dict | None = None) -> bytes:
    return encode_message(build_message(command, args or {}, secret, NOW, key_id=key_id))


def _refusal(raw: bytes, keys: ControlKeys) -> ControlRefused:
    with pytest.raises(ControlRefused) as refused:
        verify_message(raw, keys, NOW)
    return refused.value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("BSE_CONTROL_SECRET", "BSE_CONTROL_KEY_ID", "BSE_CONTROL_KEYS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---------------------------------------------------------------- the settings


def test_a_secret_shorter_than_32_characters_is_refused_without_being_shown(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BSE_CONTROL_SECRET", "x" * 31)
    with pytest.raises(ValidationError) as refused:
        load_settings()
    assert "shorter than 32 characters" in str(refused.value) and "x" * 31 not in str(refused.value)
    clean_env.setenv("BSE_CONTROL_SECRET", "x" * 32)
    assert load_settings().control_secret == SecretStr("x" * 32)
    clean_env.setenv("BSE_CONTROL_SECRET", "")
    assert load_settings().control_secret is None  # unset, as before: messages refused, commands say so


def test_key_id_and_extra_keys_come_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().control_key_id == "primary"
    clean_env.setenv("BSE_CONTROL_SECRET", NEW)
    clean_env.setenv("BSE_CONTROL_KEY_ID", "k2")
    clean_env.setenv("BSE_CONTROL_KEYS", f" primary={OLD} , other={OTHER}=,")  # '=' may be part of a secret
    settings = load_settings()
    keys = control_keys(settings)
    assert keys is not None and keys.signing_id == "k2"
    assert dict(keys.secrets) == {"k2": NEW, "primary": OLD, "other": OTHER + "="}
    assert OLD not in repr(keys) + repr(settings) and NEW not in repr(keys) + repr(settings)


@pytest.mark.parametrize(("keys", "why"), [
    ("k2=short", "shorter than 32"),
    (f"k2={OLD},k2={OTHER}", "twice"),
    (f"bad id={OLD}", "must be id=secret"),
    (OLD, "must be id=secret"),
    (f"primary={OTHER}", "another secret"),  # primary is the signing key's id
])
def test_bad_extra_keys_are_refused_naming_the_entry_not_the_secret(clean_env: pytest.MonkeyPatch, keys: str,
                                                                    why: str) -> None:
    clean_env.setenv("BSE_CONTROL_SECRET", NEW)
    clean_env.setenv("BSE_CONTROL_KEYS", keys)
    with pytest.raises(ValidationError) as refused:
        load_settings()
    text = str(refused.value)
    assert why in text and OLD not in text and OTHER not in text and NEW not in text


def test_the_signing_key_listed_with_its_own_secret_is_fine_and_bad_key_ids_are_refused(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BSE_CONTROL_SECRET", NEW)
    clean_env.setenv("BSE_CONTROL_KEYS", f"primary={NEW}")
    assert dict(control_keys(load_settings()).secrets) == {"primary": NEW}  # type: ignore[union-attr]
    clean_env.setenv("BSE_CONTROL_KEY_ID", "no spaces")
    with pytest.raises(ValidationError):
        load_settings()


def test_a_config_file_cannot_set_the_extra_keys(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"control_keys: k2={OLD}\n")
    with pytest.raises(ValueError, match="BSE_CONTROL_KEYS"):
        load_settings(config)


def test_parse_control_keys_skips_empty_entries() -> None:
    assert parse_control_keys(f",a={OLD},,b.c_d-1={NEW}, ") == {"a": OLD, "b.c_d-1": NEW}
    assert parse_control_keys("") == {}


# ---------------------------------------------------------------- commands refusing to start


@pytest.mark.parametrize("command", [["worker"], ["control", "promote", "v1"], ["control", "rollback", "--no-wait"]])
def test_the_worker_and_the_control_commands_refuse_a_short_secret_in_one_line(
        clean_env: pytest.MonkeyPatch, command: list[str]) -> None:
    short = "too-short-secret"
    clean_env.setenv("BSE_CONTROL_SECRET", short)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "shorter than 32 characters" in result.output
    assert short not in result.output


def test_rotate_prints_a_new_valid_secret_alone_on_stdout_and_the_steps(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BSE_CONTROL_SECRET", OLD)
    runner = CliRunner()
    result = runner.invoke(app, ["control", "rotate", "--key-id", "k2"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    steps = result.stderr
    assert "BSE_CONTROL_KEYS='k2=<new secret>'" in steps and "BSE_CONTROL_KEY_ID=k2" in steps
    assert "BSE_CONTROL_KEYS='primary=<old secret>'" in steps and "remove the old key" in steps
    assert OLD not in result.output and secret not in steps
    clean_env.setenv("BSE_CONTROL_KEYS", f"k2={secret}")  # step 1 with it: valid settings
    assert control_keys(load_settings()).secret_for("k2") == secret  # type: ignore[union-attr]
    again = runner.invoke(app, ["control", "rotate", "--key-id", "k2"])
    assert again.exit_code == 0 and again.stdout.strip() != secret
    assert runner.invoke(app, ["control", "rotate", "--key-id", "primary"]).exit_code == 2  # the current key's id


def test_rotate_works_while_the_current_secret_is_too_short(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BSE_CONTROL_SECRET", "short")
    result = CliRunner().invoke(app, ["control", "rotate"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"[0-9a-f]{64}", result.stdout.strip())
    assert re.search(r"BSE_CONTROL_KEY_ID=key-\d{8}", result.stderr)


# ---------------------------------------------------------------- verification by key id


def test_a_message_names_its_key_and_the_id_is_signed() -> None:
    fields = build_message("rollback", {}, NEW, NOW, key_id="k2")
    assert fields["key_id"] == "k2"
    assert fields["signature"] == sign_fields({k: v for k, v in fields.items() if k != "signature"}, NEW)
    assert "key_id" not in build_message("rollback", {}, NEW, NOW)  # as before key ids
    with pytest.raises(ValueError):
        build_message("rollback", {}, NEW, NOW, key_id="no spaces")
    keys = ControlKeys.of("k2", NEW, {"primary": OLD})
    assert verify_message(encode_message(fields), keys, NOW).key_id == "k2"
    fields["key_id"] = "primary"  # relabelled after signing: the old key does not sign it
    assert _refusal(encode_message(fields), keys).kind == "bad_signature"


def test_a_message_signed_with_the_old_key_is_accepted_during_a_rotation_and_refused_after_it() -> None:
    before = ControlKeys.of("primary", OLD)
    during_worker_not_switched = ControlKeys.of("primary", OLD, {"k2": NEW})  # step 1
    during_worker_switched = ControlKeys.of("k2", NEW, {"primary": OLD})  # step 2
    after = ControlKeys.of("k2", NEW)  # step 3
    old_sender, new_sender = _raw(OLD, "primary"), _raw(NEW, "k2")
    old_without_id = _raw(OLD, None)  # a sender from before key ids
    assert verify_message(old_sender, before, NOW).command == "rollback"
    assert verify_message(old_without_id, before, NOW).key_id is None
    for keys in (during_worker_not_switched, during_worker_switched):
        assert verify_message(old_sender, keys, NOW).key_id == "primary"
        assert verify_message(new_sender, keys, NOW).key_id == "k2"
    assert verify_message(old_without_id, during_worker_not_switched, NOW).key_id is None  # the signing key
    assert _refusal(old_without_id, during_worker_switched).kind == "bad_signature"  # the signing key is new
    refused = _refusal(old_sender, after)
    assert refused.kind == "unknown_key" and "'primary'" in refused.reason and OLD not in str(refused)
    assert refused.message_id is not None and refused.command == "rollback"  # reported with its id
    assert verify_message(new_sender, after, NOW).key_id == "k2"
    assert _refusal(new_sender, before).kind == "unknown_key"


def test_a_key_id_that_is_not_an_id_is_malformed_and_one_secret_verifies_any_key_id() -> None:
    keys = ControlKeys.of("primary", OLD)
    fields = {"id": "m1", "issued_at": "2026-11-21T12:00:00.000Z", "issued_by": "ops", "command": "rollback",
              "args": {}}
    for bad in (7, None, "", "a b", "x" * 65, ["primary"]):
        signed = {**fields, "key_id": bad}
        raw = json.dumps({**signed, "signature": sign_fields(signed, OLD)}).encode()
        if bad is None:  # null is "no key id": the signing key
            assert verify_message(raw, keys, NOW).key_id is None
            continue
        assert _refusal(raw, keys).kind == "malformed"
    # Callers holding one secret (no ids): the signature decides; the id must still be well formed.
    assert verify_message(_raw(OLD, "whatever-id"), OLD, NOW).key_id == "whatever-id"
    with pytest.raises(ControlRefused) as refused:
        verify_message(_raw(OLD, "k2"), NEW, NOW)
    assert refused.value.kind == "bad_signature"


def test_control_keys_refuse_a_second_secret_for_the_signing_id_and_hide_secrets() -> None:
    with pytest.raises(ValueError):
        ControlKeys.of("primary", OLD, {"primary": NEW})
    keys = ControlKeys.of("primary", OLD, {"primary": OLD, "k2": NEW})
    assert keys.secret_for(None) == OLD and keys.secret_for("k2") == NEW and keys.secret_for("k3") is None
    assert OLD not in repr(keys) and NEW not in repr(keys) and "'k2'" in repr(keys)


def test_no_secret_means_no_keys() -> None:
    assert control_keys(Settings()) is None
    settings = Settings(control_secret=SecretStr(NEW), control_keys=SecretStr(f"k2={OLD}"))
    assert dict(control_keys(settings).secrets) == {"primary": NEW, "k2": OLD}  # type: ignore[union-attr]


def test_control_events_name_the_key_id_of_the_message() -> None:
    keys = ControlKeys.of("k2", NEW, {"primary": OLD})
    for raw, key_id in ((_raw(OLD, "primary", "fallback", {"version": "v1"}), "primary"),
                        (_raw(NEW, None, "fallback", {"version": "v2"}), None)):
        _, events = step(ControlState(), CommandReceived(verify_message(raw, keys, NOW), default_live="v0"), NOW)
        assert [(e.status, e.key_id) for e in events] == [("applied", key_id)]


# ---------------------------------------------------------------- control.state across a rotation


def test_state_records_signed_with_any_accepted_key_are_read() -> None:
    state = ControlState(revision=3, sequence=5, live="v1")
    old_record = encode_state_record(state, OLD, "w1", NOW)
    assert decode_state_record(old_record, [NEW, OLD]) == state
    assert decode_state_record(old_record, OLD) == state
    with pytest.raises(ControlRefused):
        decode_state_record(old_record, [NEW])
    log = ControlStateLog(Settings(), NEW, accepted=(NEW, OLD))
    assert log._accepted == (NEW, OLD)
    assert ControlStateLog(Settings(), None, accepted=(OLD,))._accepted == ()  # no secret: nothing restored


def test_rotate_without_a_key_yet_makes_the_first_one(clean_env: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["control", "rotate", "--key-id", "primary"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"[0-9a-f]{64}", result.stdout.strip())
    assert "No BSE_CONTROL_SECRET is set" in result.stderr and "BSE_CONTROL_KEY_ID=primary" in result.stderr
