"""Signed control messages: the contract's signing rule, refusals and argument checks."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.settings import ControlConfig
from bse_predict.control.messages import (
    MAX_MESSAGE_BYTES,
    MAX_NESTING,
    ControlRefused,
    build_message,
    encode_message,
    verify_message,
)
from bse_predict.integrity.signing import sign_fields

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
        ("promote", {"version": "v2", "shadow_previous": "yes"}),
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


# ---------------------------------------------------------------- bytes that are not a control message


def _signed(fields: dict) -> bytes:
    """``fields`` signed with SECRET, as JSON bytes (so a refusal is about the content, not the signature)."""
    return json.dumps({**fields, "signature": sign_fields(fields, SECRET)}).encode()


def _valid_fields(**changes: object) -> dict:
    fields = {"id": "m9", "issued_at": "2026-11-21T12:00:00Z", "issued_by": "ops", "command": "rollback", "args": {}}
    return {**fields, **changes}


def test_size_is_checked_before_anything_is_parsed() -> None:
    refusal = _refusal(b"[" * 200_000)  # json.loads alone raises RecursionError on this
    assert refusal.kind == "too_large" and "200000 bytes" in refusal.reason
    raw = encode_message(build_message("rollback", {}, SECRET, NOW))
    assert verify_message(raw, SECRET, NOW, max_bytes=len(raw)).command == "rollback"
    with pytest.raises(ControlRefused) as caught:
        verify_message(raw, SECRET, NOW, max_bytes=len(raw) - 1)
    assert caught.value.kind == "too_large"
    assert MAX_MESSAGE_BYTES == ControlConfig().max_message_bytes == 8192


@pytest.mark.parametrize("raw", [b"[" * 200_000, b"{\"a\":" * 60_000, b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1)])
def test_deep_nesting_is_refused_without_recursing(raw: bytes) -> None:
    with pytest.raises(ControlRefused) as caught:
        verify_message(raw, SECRET, NOW, max_bytes=1_000_000)
    assert caught.value.kind == "malformed" and "nested deeper" in caught.value.reason


def test_nesting_in_a_signed_message_is_refused_but_brackets_inside_strings_do_not_count() -> None:
    deep: object = 1
    for _ in range(MAX_NESTING):
        deep = [deep]
    refusal = _refusal(_signed(_valid_fields(args={"x": deep})))
    assert refusal.kind == "malformed" and "nested" in refusal.reason
    message = verify_message(_signed(_valid_fields(issued_by="[[[[{{{{" * 10)), SECRET, NOW)
    assert message.issued_by == "[[[[{{{{" * 10


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"id": "a", "\xc3\x28": 1}', "not UTF-8"),
        (b"", "not JSON"),
        (b'{"id": "a", "id": "b"}', "duplicate key 'id'"),
        (b'{"args": {"v": NaN}}', "NaN is not JSON"),
        (b'{"args": {"v": -Infinity}}', "-Infinity is not JSON"),
        (b'{"id": "\\ud800"}', "lone surrogate"),
        (b'{"id": ' + b"9" * 5000 + b"}", "not JSON"),
        (b'"just a string"', "a JSON str is not a control message"),
        (None, "no value"),
    ],
)
def test_undecodable_bytes_are_refused_with_a_reason(raw: bytes | None, said: str) -> None:
    refusal = _refusal(raw)  # type: ignore[arg-type]
    assert refusal.kind == "malformed" and said in refusal.reason


def test_a_duplicate_key_is_refused_even_when_the_signature_would_match_the_last_value() -> None:
    fields = _valid_fields(command="promote", args={"version": "v2"})
    signed = _signed(fields).decode()
    doubled = signed.replace('"command": "promote"', '"command": "rollback", "command": "promote"')
    assert doubled != signed
    assert "duplicate key 'command'" in _refusal(doubled.encode()).reason


def test_a_refusal_repeats_only_printable_short_ids_and_commands() -> None:
    refusal = _refusal(json.dumps({"id": "x" * 129, "command": "promote\n", "signature": "0" * 64}).encode())
    assert (refusal.kind, refusal.message_id, refusal.command) == ("bad_signature", None, None)
    refusal = _refusal(json.dumps({"id": "m1", "command": "promote", "signature": "é" * 64}).encode())
    assert (refusal.kind, refusal.message_id, refusal.command) == ("bad_signature", "m1", "promote")


@pytest.mark.parametrize(
    "changes",
    [
        {"issued_at": "0001-01-01T00:00:00+01:00"},  # before the first representable UTC time
        {"command": "ab", "args": {"variants": {"v1": 10**400}}},
        {"command": "ramp", "args": {"version": "v2", "shares": [{}, 1]}},
        {"command": "ramp", "args": {"version": "v2", "shares": [0, 10**400, 1]}},
        {"command": "ramp", "args": {"version": "v2", "every_s": 10**400}},
        {"command": "ramp", "args": {"version": "v2", "every_s": 1e300}},
        {"command": "promote", "args": {"version": "v" * 300}},
        {"command": "promote", "args": {"version": "v\x00"}},
        {"command": "promote", "args": {"version": "a\\b"}},
        {"command": "promote", "args": {"version": ["v1"]}},
        {"command": "gate", "args": {"version": "v2", "passed": "yes"}},
        {"id": ""},
        {"issued_by": 5},
        {"args": []},
    ],
)
def test_signed_messages_with_values_out_of_range_are_refused_not_raised(changes: dict) -> None:
    assert _refusal(_signed(_valid_fields(**changes))).kind == "malformed"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**400), 10**400) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_FIELD_VALUES = {
    "id": st.text(max_size=130) | _JSON,
    "issued_at": st.sampled_from(["2026-11-21T12:00:00Z", "2026-11-21T12:00:00", "9999-12-31T23:59:59-14:00",
                                  "0001-01-01T00:00:00+14:00", "yesterday"]) | _JSON,
    "issued_by": st.text(max_size=130) | _JSON,
    "command": st.sampled_from(["promote", "rollback", "ab", "shadow", "fallback", "ramp", "gate", "nuke"]) | _JSON,
    "args": st.fixed_dictionaries({}, optional={
        "version": st.text(max_size=10) | _JSON, "variants": st.dictionaries(st.text(max_size=5), _JSON) | _JSON,
        "shares": st.lists(_JSON | st.floats(0, 1), max_size=4) | _JSON, "every_s": _JSON,
        "passed": _JSON, "reason": _JSON}) | _JSON,
}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_are_verified_or_refused(raw: bytes) -> None:
    try:
        verify_message(raw, SECRET, NOW)
    except ControlRefused as refusal:
        assert refusal.kind in {"malformed", "bad_signature", "too_large"}


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({}, optional=_FIELD_VALUES))
@pytest.mark.slow
def test_any_signed_json_object_is_verified_or_refused(fields: dict) -> None:
    try:
        message = verify_message(_signed(fields), SECRET, NOW)
    except ControlRefused as refusal:
        assert refusal.kind in {"malformed", "stale", "from_future", "too_large"}  # never bad_signature
    else:
        assert message.command in ("promote", "rollback", "ab", "shadow", "fallback", "ramp", "gate")
