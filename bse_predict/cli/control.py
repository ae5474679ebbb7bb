"""``bse-predict control``: signed control messages to the running workers, and the rotation of the control
key (docs/operations.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from bse_predict.cli.shared import ConfigOption, command_settings, console, errors, one_line_errors

__all__ = ["control_app"]

control_app = typer.Typer(help="Signed control messages to the running workers (docs/operations.md).",
                          no_args_is_help=True)

IssuedByOption = Annotated[str, typer.Option("--issued-by", help="Who sends it (recorded on control.events).")]
WaitOption = Annotated[float, typer.Option(
    "--wait-s", min=0.0, help="Seconds to wait for a worker's answer on control.events (exit 1: refused, "
                              "3: no answer in time).")]
NoWaitOption = Annotated[bool, typer.Option("--no-wait", help="Send and exit 0 without waiting for the answer.")]
_REFUSED_EXIT = 1
_NO_ANSWER_EXIT = 3


def _send_control(config: Path | None, command: str, args: dict[str, Any], issued_by: str, wait_s: float = 30.0,
                  no_wait: bool = False) -> None:
    """Build, sign with BSE_CONTROL_SECRET (its id BSE_CONTROL_KEY_ID) and send one control message; print
    its id, then wait for a worker's answer: applied (exit 0), refused (exit 1, the reason on stderr), none
    within ``wait_s`` (exit 3)."""
    from datetime import UTC, datetime

    from bse_predict.control.messages import build_message
    from bse_predict.connections.clients import explained_kafka_errors
    from bse_predict.control.sender import send_control, send_control_and_wait

    settings = command_settings(config)
    if settings.control_secret is None or not settings.control_secret.get_secret_value():
        raise ValueError("BSE_CONTROL_SECRET is not set: control messages cannot be signed")
    fields = build_message(command, args, settings.control_secret.get_secret_value(), datetime.now(UTC), issued_by,
                           key_id=settings.control_key_id)
    where = f"{command} {fields['args']} id={fields['id']} to {settings.topic('control')}"
    with explained_kafka_errors(settings):
        if no_wait:
            asyncio.run(send_control(settings, fields))
            console.print(f"sent {where}; the outcome appears on {settings.topic('control.events')}",
                          markup=False, highlight=False)
            return

        def waiting() -> None:
            errors.print(f"sent {where}; waiting up to {wait_s:g} s for a worker's answer on "
                         f"{settings.topic('control.events')}", markup=False, highlight=False)

        answer = asyncio.run(send_control_and_wait(settings, fields, wait_s, waiting))
    if answer is None:
        errors.print(f"error: no worker answered within {wait_s:g} s (is a worker running on "
                     f"{settings.kafka_bootstrap}, topic prefix {settings.topic_prefix!r}?); message {fields['id']} "
                     f"was sent and is refused as stale if no worker reads it within {settings.control.max_age_s:g} s",
                     markup=False, highlight=False)
        raise typer.Exit(_NO_ANSWER_EXIT)
    if answer.status == "refused":
        errors.print(f"error: refused {command} id={fields['id']}: {answer.reason}", markup=False, highlight=False)
        raise typer.Exit(_REFUSED_EXIT)
    live = "" if answer.state is None else f" (revision {answer.state.get('revision')}, live {answer.state.get('live')})"
    console.print(f"applied {command} id={fields['id']}: {answer.reason}{live}", markup=False, highlight=False)


def _version_or_off(value: str) -> str | None:
    return None if value.lower() == "off" else value


@control_app.command("promote")
@one_line_errors
def control_promote(
    version: str,
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
    wait_s: WaitOption = 30.0,
    no_wait: NoWaitOption = False,
    shadow_previous: Annotated[bool, typer.Option(
        "--shadow-previous",
        help="Keep the version it replaces as the shadow: the challenger test goes on, now with VERSION live, "
             "and (with challenger.auto_promote) rolls back a live regression.")] = False,
) -> None:
    """Make VERSION live for every symbol, after a load, hash check and warm-up on current windows."""
    args: dict[str, object] = {"version": version, **({"shadow_previous": True} if shadow_previous else {})}
    _send_control(config, "promote", args, issued_by, wait_s, no_wait)


@control_app.command("rollback")
@one_line_errors
def control_rollback(config: ConfigOption = None, issued_by: IssuedByOption = "ops", wait_s: WaitOption = 30.0,
                     no_wait: NoWaitOption = False) -> None:
    """Make the previous live version live again, at once."""
    _send_control(config, "rollback", {}, issued_by, wait_s, no_wait)


@control_app.command("ab")
@one_line_errors
def control_ab(
    variants: Annotated[list[str], typer.Argument(help="VERSION=WEIGHT pairs, e.g. v1=0.9 v2=0.1.")],
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
    wait_s: WaitOption = 30.0,
    no_wait: NoWaitOption = False,
) -> None:
    """Split symbols between versions by weight (sticky by symbol); ``variant`` in predictions names the arm."""
    weights: dict[str, float] = {}
    for pair in variants:
        name, sep, weight = pair.partition("=")
        try:
            weights[name] = float(weight)
        except ValueError:
            raise ValueError(f"expected VERSION=WEIGHT, got {pair!r}") from None
        if not sep or not name:
            raise ValueError(f"expected VERSION=WEIGHT, got {pair!r}")
    _send_control(config, "ab", {"variants": weights}, issued_by, wait_s, no_wait)


def _version_or_off_command(command: str, help_text: str) -> None:
    """Register ``control COMMAND VERSION``: the commands that set one version, or clear it with ``off``."""

    @control_app.command(command, help=help_text)
    @one_line_errors
    def send(
        version: Annotated[str, typer.Argument(help="A version, or off.")],
        config: ConfigOption = None,
        issued_by: IssuedByOption = "ops",
        wait_s: WaitOption = 30.0,
        no_wait: NoWaitOption = False,
    ) -> None:
        _send_control(config, command, {"version": _version_or_off(version)}, issued_by, wait_s, no_wait)


_version_or_off_command(
    "shadow", "Run VERSION on every candle and publish it to predictions.shadow only; ``off`` stops it.")
_version_or_off_command(
    "fallback", "The version that answers (degraded: true) while a served model's circuit breaker is open.")


@control_app.command("ramp")
@one_line_errors
def control_ramp(
    version: str,
    shares: Annotated[str, typer.Option("--shares", help="Rising shares ending at 1; 0 = shadow only.")] = "0,0.05,0.25,0.5,1",
    every_s: Annotated[float | None, typer.Option("--every-s", help="Seconds per step; omit to advance on gates only.")] = None,
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
    wait_s: WaitOption = 30.0,
    no_wait: NoWaitOption = False,
) -> None:
    """Warm VERSION up: shadow, then growing shares of symbols, then live; stops at the first failed gate."""
    try:
        steps = [float(x) for x in shares.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--shares must be numbers separated by commas, got {shares!r}") from None
    _send_control(config, "ramp", {"version": version, "shares": steps, "every_s": every_s}, issued_by, wait_s,
                  no_wait)


@control_app.command("gate")
@one_line_errors
def control_gate(
    version: str,
    passed: Annotated[bool, typer.Option("--pass/--fail", help="The gate's verdict on the ramping VERSION.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for control.events.")] = "",
    config: ConfigOption = None,
    issued_by: IssuedByOption = "ops",
    wait_s: WaitOption = 30.0,
    no_wait: NoWaitOption = False,
) -> None:
    """A gate's verdict on a ramping version: --pass moves it to the next share, --fail stops the ramp."""
    _send_control(config, "gate", {"version": version, "passed": passed, "reason": reason}, issued_by, wait_s,
                  no_wait)


@control_app.command("rotate")
@one_line_errors
def control_rotate(
    key_id: Annotated[str | None, typer.Option("--key-id", help="The new key's id (default: key-YYYYMMDD, today).")] = None,
    config: ConfigOption = None,
) -> None:
    """Make a new random control key: the secret alone on stdout, the rotation steps on stderr (docs/operations.md)."""
    import re
    import secrets
    from datetime import UTC, datetime

    from configs.settings import CONTROL_KEY_ID_PATTERN

    try:
        settings = command_settings(config)
        old_id, has_key = settings.control_key_id, settings.control_secret is not None
    except ValidationError:  # a BSE_CONTROL_SECRET too short to start with is a reason to be here
        old_id, has_key = "<BSE_CONTROL_KEY_ID, default primary>", True
    new_id = key_id or f"key-{datetime.now(UTC):%Y%m%d}"
    if not re.fullmatch(CONTROL_KEY_ID_PATTERN, new_id):
        raise ValueError(f"--key-id {new_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if has_key and new_id == old_id:
        raise ValueError(f"--key-id {new_id!r} is the current key's id; name the new key differently")
    secret = secrets.token_hex(32)  # 256 random bits as 64 hex digits: nothing to quote, no ',' or '='
    if not has_key:
        steps = f"""new control key {new_id}: the secret is the one line on stdout.
No BSE_CONTROL_SECRET is set here: give every worker and sender the same
  BSE_CONTROL_SECRET='<new secret>'  BSE_CONTROL_KEY_ID={new_id}"""
    else:
        steps = f"""new control key {new_id}: the secret is the one line on stdout; keep it like the current one.
Rotate without refusing a message on the way (every worker restarted one at a time at each step):
  1. every worker accepts it too:  BSE_CONTROL_KEYS='{new_id}=<new secret>'
     (comma-separated after any keys already listed there)
  2. every sender signs with it: operator machines and the workers (challenger decisions, control.state):
       BSE_CONTROL_SECRET='<new secret>'  BSE_CONTROL_KEY_ID={new_id}
     and the workers keep accepting the old key:  BSE_CONTROL_KEYS='{old_id}=<old secret>'
  3. once no sender uses the old key (control.events names each message's key_id) and
     control.max_age_s has passed: remove the old key from BSE_CONTROL_KEYS everywhere."""
    errors.print(steps, markup=False, highlight=False)
    console.print(secret, markup=False, highlight=False)
