"""Signed control messages of the contract's ``control`` topic: build, sign, verify.

The signature is HMAC-SHA256, key ``BSE_CONTROL_SECRET``, over the message
without ``signature`` as ``json.dumps(m, sort_keys=True, separators=(",", ":"))``
writes it, UTF-8. An optional ``key_id`` (signed like every other field) names the
key: a worker verifies with :class:`ControlKeys`, its signing key and the extra keys
accepted while keys are rotated; a message without ``key_id`` (an older sender) is
verified with the signing key, one naming a key the worker does not hold is refused
(``unknown_key``). Verification works on the *decoded JSON object as received*
(any extra fields a producer added included), never on a re-serialised model:
a re-serialisation could spell ``issued_at`` or a float differently and break
a valid signature.

Bytes that are not a control message are refused, never raised on: the size
is checked before anything is parsed (``max_bytes``), then strict UTF-8, a
nesting limit (:data:`MAX_NESTING`, checked before ``json.loads``, which
would recurse once per bracket), strict JSON (no duplicate keys, no ``NaN``
or ``Infinity``, no lone surrogate escapes). Every failure is a
:class:`ControlRefused` whose ``kind`` goes on ``control.events``.

Duplicate ids are a matter of state (which ids were seen), so they are checked
by the control state machine (:mod:`bse_predict.control.state_machine`); an id only needs
remembering for as long as a message carrying it would still be fresh.
The time is passed in; nothing here reads the clock.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from configs.settings import CONTROL_KEY_ID_PATTERN
from bse_predict.errors import BsePredictError
from bse_predict.integrity.signing import sign_fields, signature_matches
from bse_predict.integrity.strict_json import RepeatedKey, no_repeated_keys

__all__ = [
    "COMMANDS",
    "Command",
    "ControlMessage",
    "ControlRefused",
    "ControlKeys",
    "build_message",
    "encode_message",
    "verify_message",
    "format_issued_at",
    "check_args",
    "decode_json_object",
    "MAX_MESSAGE_BYTES",
    "MAX_NESTING",
]

MAX_MESSAGE_BYTES = 8192  # the default of ``control.max_message_bytes``; a real message is a few hundred bytes
MAX_NESTING = 16  # brackets deep; a control message needs 3
MAX_EVERY_S = 366 * 86_400.0  # a ramp step at most once a year: later than that is a typo
_MAX_NAME_BYTES = 200  # a version is a directory name: most file systems allow 255 bytes
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")

Command = Literal["promote", "rollback", "ab", "shadow", "fallback", "ramp", "gate"]
COMMANDS: tuple[str, ...] = ("promote", "rollback", "ab", "shadow", "fallback", "ramp", "gate")


class ControlRefused(BsePredictError):
    """A control message that is not obeyed; ``kind`` is the short reason on ``control.events``."""

    def __init__(self, kind: str, reason: str, message_id: str | None = None, command: str | None = None) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.message_id = message_id
        self.command = command


@dataclass(frozen=True, repr=False)
class ControlKeys:
    """The keys that verify control messages: ``signing_id`` names the signing key (``BSE_CONTROL_SECRET``,
    ``BSE_CONTROL_KEY_ID``), ``secrets`` maps every accepted key id to its secret, the signing key's included.
    Its repr names the ids only."""

    signing_id: str
    secrets: Mapping[str, str]

    @classmethod
    def of(cls, signing_id: str, signing_secret: str, accepted: Mapping[str, str] | None = None) -> ControlKeys:
        """The signing key and the extra ``accepted`` ones (``BSE_CONTROL_KEYS``); ValueError when
        ``accepted`` gives the signing key's id another secret."""
        extra = dict(accepted or {})
        if extra.get(signing_id, signing_secret) != signing_secret:
            raise ValueError(f"key {signing_id!r} is the signing key: it cannot be given another secret")
        return cls(signing_id, {**extra, signing_id: signing_secret})

    def secret_for(self, key_id: str | None) -> str | None:
        """The secret of ``key_id`` (the signing key's for None); None for a key this worker does not hold."""
        return self.secrets.get(self.signing_id if key_id is None else key_id)

    def __repr__(self) -> str:
        return f"ControlKeys(signing_id={self.signing_id!r}, ids={sorted(self.secrets)!r})"


def _version_name(value: object) -> str:
    if (not isinstance(value, str) or not value or not value.isprintable() or "/" in value or "\\" in value
            or value.startswith(".") or len(value.encode("utf-8")) > _MAX_NAME_BYTES):
        raise ValueError(f"{value!r:.80} is not a version name")
    return value


def _number(value: object) -> float | None:
    """``value`` as a finite float; None for anything else (bools, text, huge integers, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) else None


def _ramp_shares(value: object) -> list[float]:
    if not isinstance(value, list) or not value:
        raise ValueError("ramp needs a non-empty list of shares")
    numbers = [_number(v) for v in value]
    if any(n is None for n in numbers):
        raise ValueError("ramp shares must be numbers")
    shares = [n for n in numbers if n is not None]
    if any(not (0.0 <= s <= 1.0) for s in shares) or shares != sorted(shares) or shares[-1] != 1.0:
        raise ValueError("ramp shares must rise from >= 0 to exactly 1.0")
    return shares


def check_args(command: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of one command, checked; raises ValueError naming what is wrong."""
    if command == "rollback":
        return {}
    if command == "promote":
        shadow_previous = args.get("shadow_previous", False)
        if not isinstance(shadow_previous, bool):
            raise ValueError("promote shadow_previous must be true or false")
        version = {"version": _version_name(args.get("version"))}
        return {**version, "shadow_previous": True} if shadow_previous else version
    if command in ("shadow", "fallback"):
        version = args.get("version")
        return {"version": None if version is None else _version_name(version)}
    if command == "ab":
        variants = args.get("variants")
        if not isinstance(variants, Mapping) or not variants:
            raise ValueError("ab needs variants {version: weight}")
        checked: dict[str, float] = {}
        for name, weight in variants.items():
            number = _number(weight)
            if number is None or number < 0:
                raise ValueError(f"weight of {name!r:.80} must be a finite number >= 0")
            checked[_version_name(name)] = number
        if sum(checked.values()) <= 0:
            raise ValueError("ab weights sum to 0")
        return {"variants": checked}
    if command == "ramp":
        every_s = args.get("every_s")
        seconds = None if every_s is None else _number(every_s)
        if every_s is not None and (seconds is None or not 0 < seconds <= MAX_EVERY_S):
            raise ValueError(f"ramp every_s must be a number of seconds in (0, {MAX_EVERY_S:.0f}], "
                             "or null to advance on gates only")
        return {
            "version": _version_name(args.get("version")),
            "shares": _ramp_shares(args.get("shares", [0.0, 0.05, 0.25, 0.5, 1.0])),
            "every_s": seconds,
        }
    if command == "gate":  # a gate's verdict on a ramping version: passed advances it, failed stops it
        passed, reason = args.get("passed"), args.get("reason", "")
        if not isinstance(passed, bool) or not isinstance(reason, str):
            raise ValueError("gate needs passed (true or false) and a reason text")
        return {"version": _version_name(args.get("version")), "passed": passed, "reason": reason[:500]}
    raise ValueError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")


class ControlMessage(BaseModel):
    """One message of the ``control`` topic, its arguments checked for its command."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1, max_length=128)
    issued_at: datetime
    issued_by: str = Field(min_length=1, max_length=128)
    key_id: str | None = Field(None, pattern=CONTROL_KEY_ID_PATTERN)  # None: an older sender, the signing key
    command: Command
    args: dict[str, Any] = {}
    signature: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("issued_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("issued_at must carry a time zone (UTC, e.g. 2026-11-21T12:00:00Z)")
        try:
            return value.astimezone(UTC)
        except OverflowError as exc:  # 0001-01-01T00:00+01:00 is before the first representable UTC time
            raise ValueError("issued_at is out of range") from exc

    @field_validator("args")
    @classmethod
    def _args_fit_command(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        command = info.data.get("command")
        if command is None:  # the command itself failed; that error is reported
            return value
        return check_args(command, value)


def format_issued_at(now: datetime) -> str:
    """UTC ISO-8601 with milliseconds and a ``Z``: ``2026-11-21T12:00:00.000Z``."""
    if now.tzinfo is None:
        raise ValueError("pass an aware datetime")
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_message(
    command: str,
    args: Mapping[str, Any],
    secret: str,
    now: datetime,
    issued_by: str = "ops",
    message_id: str | None = None,
    key_id: str | None = None,
) -> dict[str, Any]:
    """A signed control message as the JSON object to send (raises ValueError on bad args).

    Returned as a plain dict, not a model, because the signature covers exactly
    these fields; send it with :func:`encode_message`. ``key_id`` names ``secret``
    (``BSE_CONTROL_KEY_ID``); without it the message has no ``key_id``, as before key ids.
    """
    fields: dict[str, Any] = {
        "id": message_id or uuid.uuid4().hex,
        "issued_at": format_issued_at(now),
        "issued_by": issued_by,
        "command": command,
        "args": check_args(command, args),
    }
    if key_id is not None:
        if not re.fullmatch(CONTROL_KEY_ID_PATTERN, key_id):
            raise ValueError(f"key id {key_id!r:.80} must be 1-64 letters, digits, '.', '_' or '-'")
        fields["key_id"] = key_id
    fields["signature"] = sign_fields(fields, secret)
    return fields


def encode_message(fields: Mapping[str, Any]) -> bytes:
    """The value bytes for the ``control`` topic (its key is the command)."""
    return json.dumps(dict(fields), separators=(",", ":")).encode("utf-8")


def _no_constant(name: str) -> Any:
    raise ControlRefused("malformed", f"{name} is not JSON")


def _nesting(text: str) -> int:
    """How deep the brackets of ``text`` go, those inside JSON strings not counted."""
    depth = deepest = 0
    for bracket in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def decode_json_object(raw: bytes | None, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """One strict JSON object from ``raw``, or :class:`ControlRefused` (``too_large`` or ``malformed``) saying
    why not. Checked in this order: size, UTF-8, nesting (before the parser sees it), JSON, duplicate keys,
    lone surrogates (which could not be written back as UTF-8)."""
    if raw is None:
        raise ControlRefused("malformed", "the record has no value")
    if len(raw) > max_bytes:
        raise ControlRefused("too_large", f"{len(raw)} bytes, over the limit of {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ControlRefused("malformed", f"not UTF-8: {exc}") from exc
    if _nesting(text) > MAX_NESTING:
        raise ControlRefused("malformed", f"nested deeper than {MAX_NESTING} levels")
    try:
        decoded = json.loads(text, object_pairs_hook=no_repeated_keys, parse_constant=_no_constant)
    except RepeatedKey as exc:
        raise ControlRefused("malformed", str(exc)) from exc
    except ValueError as exc:  # JSONDecodeError, and integers longer than Python converts
        raise ControlRefused("malformed", f"not JSON: {str(exc)[:200]}") from exc
    if not isinstance(decoded, dict):
        raise ControlRefused("malformed", f"a JSON {type(decoded).__name__} is not a control message")
    try:
        json.dumps(decoded, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ControlRefused("malformed", "a string holds a lone surrogate escape (\\ud800 to \\udfff)") from exc
    return decoded


def _label(value: object) -> str | None:
    """A received id or command fit to be repeated on ``control.events`` (printable, at most 128 characters)."""
    return value if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable() else None


def _secret_of(fields: Mapping[str, Any], keys: ControlKeys, message_id: str | None, command: str | None) -> str:
    """The secret that must have signed ``fields``, chosen by their ``key_id``."""
    key_id = fields.get("key_id")
    if key_id is not None and (not isinstance(key_id, str) or not re.fullmatch(CONTROL_KEY_ID_PATTERN, key_id)):
        raise ControlRefused("malformed", "key_id: must be 1-64 letters, digits, '.', '_' or '-'", message_id, command)
    secret = keys.secret_for(key_id)
    if secret is None:
        raise ControlRefused("unknown_key", f"key id {key_id!r} is not one of this worker's keys "
                             f"(BSE_CONTROL_KEY_ID, BSE_CONTROL_KEYS): {', '.join(sorted(keys.secrets))}",
                             message_id, command)
    return secret


def verify_message(raw: bytes | None, secret: str | ControlKeys | None, now: datetime, max_age_s: float = 300.0,
                   max_future_s: float = 30.0, max_bytes: int = MAX_MESSAGE_BYTES) -> ControlMessage:
    """Decode, authenticate and date-check one control message; raise :class:`ControlRefused`, and
    nothing else, for any ``raw``.

    ``secret``: the :class:`ControlKeys` of a worker (the key picked by the message's ``key_id``), or one
    secret that verifies every message whatever its ``key_id``; None or empty: every message is refused.
    Order: decode (:func:`decode_json_object`), key, signature (constant-time), then shape and freshness,
    so an unsigned sender learns nothing about which fields we would accept (only which key ids exist).
    """
    fields = decode_json_object(raw, max_bytes)
    message_id, command = _label(fields.get("id")), _label(fields.get("command"))
    if not secret:
        raise ControlRefused("no_secret", "BSE_CONTROL_SECRET is not set: every control message is refused", message_id, command)
    if isinstance(secret, ControlKeys):
        secret = _secret_of(fields, secret, message_id, command)
    signature = fields.get("signature")
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature) or not signature_matches(fields, secret):
        raise ControlRefused("bad_signature", "the HMAC-SHA256 signature does not match", message_id, command)
    try:
        message = ControlMessage.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise ControlRefused("malformed", f"{where}: {first['msg']}", message_id, command) from exc
    age = now - message.issued_at
    if age > timedelta(seconds=max_age_s):
        raise ControlRefused("stale", f"issued {age.total_seconds():.0f} s ago, over the {max_age_s:.0f} s window",
                             message.id, message.command)
    if -age > timedelta(seconds=max_future_s):
        raise ControlRefused("from_future", f"issued_at is {-age.total_seconds():.0f} s ahead of this worker's clock", message.id, message.command)
    return message
