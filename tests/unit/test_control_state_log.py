"""The signed records of ``control.state`` (bse_predict/control/state_log.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bse_predict.control.state_machine import ControlState, Ramp
from bse_predict.control.messages import ControlRefused
from bse_predict.integrity.signing import sign_fields
from bse_predict.serving.routing import Arm
from bse_predict.control.state_log import decode_state_record, encode_state_record

SECRET = "log-secret"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
STATE = ControlState(revision=5, sequence=11, live="v2", previous=("v1",), arms=(Arm("v2", "v2", 0.7), Arm("v3", "v3", 0.3)),
                     fallback="v1", ramp=Ramp(version="v3", shares=(0.0, 0.3, 1.0), step=1, every_s=60.0, next_at=NOW),
                     seen=(("m1", NOW), ("m2", NOW)))


def test_a_record_round_trips_the_whole_state() -> None:
    raw = encode_state_record(STATE, SECRET, "host-1-ab", NOW)
    assert decode_state_record(raw, SECRET) == STATE
    fields = json.loads(raw)
    assert (fields["sequence"], fields["written_by"], fields["at"]) == (11, "host-1-ab", "2026-11-21T12:00:00.000Z")


@pytest.mark.parametrize(
    ("tamper", "kind"),
    [
        (lambda f: f["state"].update(live="v9"), "bad_signature"),
        (lambda f: f.update(sequence=12), "bad_signature"),
        (lambda f: f.pop("signature"), "bad_signature"),
    ],
)
def test_an_altered_record_is_refused(tamper, kind: str) -> None:  # type: ignore[no-untyped-def]
    fields = json.loads(encode_state_record(STATE, SECRET, "w", NOW))
    tamper(fields)
    with pytest.raises(ControlRefused) as caught:
        decode_state_record(json.dumps(fields).encode(), SECRET)
    assert caught.value.kind == kind


def test_another_secret_garbage_and_a_mismatched_sequence_are_refused() -> None:
    with pytest.raises(ControlRefused) as caught:
        decode_state_record(encode_state_record(STATE, "other", "w", NOW), SECRET)
    assert caught.value.kind == "bad_signature"
    for raw in (b"[" * 1000, b"\xff", None):
        with pytest.raises(ControlRefused) as caught:
            decode_state_record(raw, SECRET)
        assert caught.value.kind == "malformed"
    fields = json.loads(encode_state_record(STATE, SECRET, "w", NOW))
    fields.pop("signature")
    fields["sequence"] = 3
    fields["signature"] = sign_fields(fields, SECRET)
    with pytest.raises(ControlRefused) as caught:
        decode_state_record(json.dumps(fields).encode(), SECRET)
    assert caught.value.kind == "malformed" and "sequence" in caught.value.reason
