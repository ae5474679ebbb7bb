"""Signed control messages: the contract's signing rule, refusals and argument checks."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from models.control_message import (
    ControlRefused,
    build_message,
    encode_message,
    sign_fields,
    verify_message,
)

SECRET = "test-secret"
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def _refusal(raw: bytes, secret: str | None = SECRET, now: datetime = NOW, max_age_s: float = 300.0) -> ControlRefused:
    with pytest.raises(ControlRefused) as caught:
        verify_message(raw, secret, now, max_age_s)
    return caught.value


def test_signature_is_the_contract_rule_over_the_message_without_signature() -> None:
    fields = build_message("ab", {"variants": {"V1": 0.9, "V2": 0.1}}, SECRET, NOW, message_id="c7b1")
    unsigned = {k: v for k, v in fields.items() if k != "signature"}
    expected = hmac.new(
        SECRET.encode(), json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    assert fields["signature"] == expected
    assert fields["issued_at"] == "2026-11-21T12:00:00.000Z"


def test_a_message_signed_by_another_producer_with_extra_fields_verifies() -> None:
    fields = {
        "id": "x1",
        "issued_at": "2026-11-21T11:59:00+00:00",
        "issued_by": "auto-promoter",
        "command": "promote",
        "args": {"version": "v2"},
        "note": "an extra field the producer added",
    }
    fields["signature"] = sign_fields(fields, SECRET)
    message = verify_message(json.dumps(fields).encode(), SECRET, NOW)
    assert message.command == "promote"
    assert message.args == {"version": "v2"}
    assert message.issued_at == datetime(2026, 11, 21, 11, 59, tzinfo=UTC)


def test_round_trip_keeps_every_command() -> None:
    for command, args in [
        ("promote", {"version": "v2"}),
        ("rollback", {}),
        ("ab", {"variants": {"v1": 1, "v2": 3}}),
        ("shadow", {"version": "v2"}),
        ("shadow", {"version": None}),
        ("fallback", {"version": "v1"}),
        ("ramp", {"version": "v2", "shares": [0, 0.1, 1], "every_s": 60}),
    ]:
        message = verify_message(encode_message(build_message(command, args, SECRET, NOW)), SECRET, NOW)
        assert message.command == command


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.update(args={"version": "evil"}),
        lambda m: m.update(issued_by="someone"),
        lambda m: m.update(signature="0" * 64),
        lambda m: m.pop("signature"),
        lambda m: m.update(extra="added after signing"),
    ],
)
def test_tampered_or_unsigned_messages_are_refused(tamper) -> None:
    fields = build_message("promote", {"version": "v1"}, SECRET, NOW)
    tamper(fields)
    assert _refusal(encode_message(fields)).kind == "bad_signature"


def test_wrong_secret_and_missing_secret_are_refused() -> None:
    raw = encode_message(build_message("rollback", {}, SECRET, NOW))
    assert _refusal(raw, secret="other").kind == "bad_signature"
    assert _refusal(raw, secret=None).kind == "no_secret"
    assert _refusal(raw, secret="").kind == "no_secret"


def test_freshness_window_both_ways() -> None:
    raw = encode_message(build_message("rollback", {}, SECRET, NOW))
    verify_message(raw, SECRET, NOW + timedelta(seconds=299))
    assert _refusal(raw, now=NOW + timedelta(seconds=301)).kind == "stale"
    assert _refusal(raw, now=NOW + timedelta(seconds=61), max_age_s=60).kind == "stale"
    assert _refusal(raw, now=NOW - timedelta(seconds=31)).kind == "from_future"
    verify_message(raw, SECRET, NOW - timedelta(seconds=29))


def test_malformed_messages_are_refused_with_their_id() -> None:
    assert _refusal(b"\xff\xfe").kind == "malformed"
    assert _refusal(b"[1,2]").kind == "malformed"
    fields = {"id": "m1", "issued_at": "2026-11-21T12:00:00", "issued_by": "ops", "command": "rollback", "args": {}}
    fields["signature"] = sign_fields(fields, SECRET)
    refusal = _refusal(json.dumps(fields).encode())
    assert (refusal.kind, refusal.message_id) == ("malformed", "m1")
    fields = {"id": "m2", "issued_at": "2026-11-21T12:00:00Z", "issued_by": "ops", "command": "explode", "args": {}}
    fields["signature"] = sign_fields(fields, SECRET)
    assert _refusal(json.dumps(fields).encode()).kind == "malformed"


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("promote", {}),
        ("promote", {"version": "../etc"}),
        ("ab", {"variants": {}}),
        ("ab", {"variants": {"v1": -1, "v2": 2}}),
        ("ab", {"variants": {"v1": 0}}),
        ("ab", {"variants": {"v1": float("nan")}}),
        ("ramp", {"version": "v2", "shares": [0.5, 0.1, 1.0]}),
        ("ramp", {"version": "v2", "shares": [0.1, 0.5]}),
        ("ramp", {"version": "v2", "every_s": -5}),
        ("nuke", {}),
    ],
)
def test_bad_arguments_are_refused_when_building(command: str, args: dict) -> None:
    with pytest.raises(ValueError):
        build_message(command, args, SECRET, NOW)


def test_signed_but_bad_arguments_are_refused_on_receipt() -> None:
    fields = {"id": "m3", "issued_at": "2026-11-21T12:00:00Z", "issued_by": "ops", "command": "ab", "args": {"variants": {"v1": -1}}}
    fields["signature"] = sign_fields(fields, SECRET)
    refusal = _refusal(json.dumps(fields).encode())
    assert refusal.kind == "malformed" and "weight" in refusal.reason


def test_secret_never_appears_in_a_refusal() -> None:
    raw = encode_message(build_message("rollback", {}, SECRET, NOW))
    for refusal in (_refusal(raw, secret="wrong-secret"), _refusal(raw, now=NOW + timedelta(hours=1))):
        assert SECRET not in str(refusal) and "wrong-secret" not in str(refusal)
