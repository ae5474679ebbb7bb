"""What every command group of ``bse-predict`` uses: the two consoles, the common options, the settings of a
command and the one-line handling of expected errors. Light imports only, so ``--help`` stays instant."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from configs.settings import Settings, load_settings
from bse_predict.errors import BsePredictError

__all__ = ["ConfigOption", "DataOption", "HorizonOption", "TargetsOption", "check_version_name", "comma_separated",
           "command_settings", "console", "errors", "one_line_errors"]

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML file layered over configs/default.yaml.")]
DataOption = Annotated[list[Path], typer.Option("--data", help="Candle files or directories (repeatable).")]
TargetsOption = Annotated[str | None, typer.Option("--targets", help="Targets in percent, e.g. 1,2,5.")]
HorizonOption = Annotated[int | None, typer.Option("--horizon-hours", help="Label horizon in hours (default 72).")]

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(command: F) -> F:
    """Expected failures (bad input, a Kafka or Redis that is down or refuses us) end the command with one
    line on stderr and exit code 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from aiokafka.errors import KafkaError
        from redis.exceptions import RedisError

        from bse_predict.services.stack import ServicesError

        try:
            return command(*args, **kwargs)
        except (BsePredictError, ServicesError, ValueError, OSError, KafkaError, RedisError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, ValidationError):
                first = exc.errors()[0]
                message = f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
            errors.print(f"error: {message}", markup=False, highlight=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def command_settings(config: Path | None, targets: str | None = None, horizon_hours: int | None = None,
                     families: bool = False) -> Settings:
    """The settings of a command; ``families``: the command builds model families (train, evaluate, demo),
    so their parameters are checked against the families' constructors now, before any work."""
    market: dict[str, Any] = {}
    if targets:
        try:
            market["targets_pct"] = [float(x) for x in targets.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"--targets must be numbers separated by commas, got {targets!r}") from None
    if horizon_hours is not None:
        market["horizon_hours"] = horizon_hours
    settings = load_settings(config, **({"market": market} if market else {}))
    if families:  # the train extra: scikit-learn and the families, never loaded by a serving command
        from bse_predict.families.base import check_family_params

        check_family_params(settings)
    return settings


def comma_separated(value: str) -> tuple[str, ...]:
    """The names of a comma-separated option (``--families``, ``--models``, ``--phases``), blanks dropped."""
    return tuple(name.strip() for name in value.split(",") if name.strip())


def check_version_name(version: str) -> None:
    """Refuse a model version name that is not a safe folder name (train, models sign)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", version):
        raise ValueError(f"version {version!r} must be 1-64 letters, digits, '.', '_' or '-'")
