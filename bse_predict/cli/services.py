"""``bse-predict services``: the local Kafka (one node or a three-broker cluster) and Redis, plain or secure."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bse_predict.cli.shared import ConfigOption, command_settings, console, errors, one_line_errors

__all__ = ["services_app"]

services_app = typer.Typer(help="Local Kafka (KRaft: one node, or a three-broker cluster) and Redis, without Docker.",
                           no_args_is_help=True)


def _print_report(report: Any) -> None:
    def line(state: Any, indent: str = "") -> None:
        mark = "[green]up[/green]" if state.healthy else ("[yellow]starting[/yellow]" if state.running else "[red]down[/red]")
        pid = "" if state.log_path is None else f"  pid={state.pid or '-'}  log={state.log_path}"
        console.print(f"{indent}{state.name:<6} {mark}  {state.address}{pid}  {state.detail}")

    line(report.kafka)
    if len(report.kafka_brokers) > 1:
        for broker in report.kafka_brokers:
            line(broker, indent="  ")
    line(report.redis)


SecureOption = Annotated[bool, typer.Option(
    "--secure", help="The secure stack instead, beside the plain one: Kafka SASL_SSL (SCRAM-SHA-512) on 9098, "
                     "Redis TLS with an ACL user on 6380, in var/services/secure (docs/services.md).")]


@services_app.command("up")
@one_line_errors
def services_up_command(
    config: ConfigOption = None,
    brokers: Annotated[int, typer.Option(
        "--brokers", help="1: one Kafka node; 3: a three-broker KRaft cluster (replication 3, min.insync.replicas 2), "
                          "brokers at the bootstrap port, +2 and +4, each controller one port above (docs/services.md).")] = 1,
    secure: SecureOption = False,
) -> None:
    """Start Kafka and Redis (idempotent); returns when all answer. With --secure, prints the client's settings."""
    progress = lambda m: errors.print(m, markup=False)  # noqa: E731
    if secure:
        from bse_predict.services.local_secure import secure_environment, secure_stack, secure_up

        if brokers != 1:
            raise ValueError("--secure runs one Kafka node; leave out --brokers")
        stack = secure_stack()
        _print_report(secure_up(stack, progress=progress))
        errors.print(f"the client's settings (also in {stack.env_path}, for `. {stack.env_path}`):", markup=False)
        for name, value in secure_environment(stack).items():
            console.print(f"{name}={value}", markup=False, highlight=False)
        return
    from bse_predict.services.stack import services_up

    report = services_up(command_settings(config), brokers=brokers, progress=progress)
    _print_report(report)
    if len(report.kafka_brokers) > 1:
        errors.print(f"clients of the cluster: BSE_KAFKA_BOOTSTRAP={report.kafka.address}", markup=False)


@services_app.command("down")
@one_line_errors
def services_down_command(config: ConfigOption = None, secure: SecureOption = False) -> None:
    """Stop the local Kafka (every broker) and Redis started by `services up` (with --secure: the secure stack)."""
    progress = lambda m: errors.print(m, markup=False)  # noqa: E731
    if secure:
        from bse_predict.services.local_secure import secure_down, secure_stack

        _print_report(secure_down(secure_stack(), progress=progress))
        return
    from bse_predict.services.stack import services_down

    _print_report(services_down(command_settings(config), progress=progress))


@services_app.command("status")
@one_line_errors
def services_status_command(config: ConfigOption = None, secure: SecureOption = False) -> None:
    """Report Kafka (each broker of a cluster) and Redis; exit code 1 unless all answer."""
    if secure:
        from bse_predict.services.local_secure import secure_stack, secure_status

        report = secure_status(secure_stack())
    else:
        from bse_predict.services.stack import services_status

        report = services_status(command_settings(config))
    _print_report(report)
    if not (report.kafka.healthy and report.redis.healthy):
        raise typer.Exit(1)
