"""The command line: --help everywhere, one-line reasons and a non-zero exit on bad input."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bse_predict.cli import app

runner = CliRunner()

COMMANDS = [["services", "up"], ["services", "down"], ["services", "status"], ["train"], ["evaluate"], ["worker"], ["replay"],
            ["bench"], ["demo"], ["tune"], ["relay"], ["ingest"], ["archive"], ["models", "list"], ["models", "show"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "--help" in result.output
    if command not in (["models", "show"],):
        assert "--config" in result.output


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["train", "--data", "/nonexistent", "--version", "v"], "does not exist"),
        (["train", "--data", ".", "--version", "bad name!"], "version"),
        (["replay", "--data", "/nonexistent"], "does not exist"),
        (["replay", "--data", ".", "--rate", "-3"], "--rate"),
        (["worker", "--engine", "torch"], "--engine"),
        (["bench", "--phases", "relay,gpu"], "phases"),
        (["ingest", "--market", "options"], "--market"),
        (["ingest", "--symbols", "BTC-USDT"], "--symbols"),
        (["models", "show", "nope"], "manifest"),
        (["train", "--data", ".", "--version", "v", "--targets", "1,x"], "--targets"),
        (["models", "list", "--config", "/nonexistent.yaml"], "config file not found"),
        (["archive", "--out", "/dev/null"], "is a file"),
        (["archive", "--out", "nosuch://bucket/x"], "pyarrow cannot open"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(arguments: list[str], reason: str, tmp_path) -> None:
    result = runner.invoke(app, arguments, env={"BSE_MODELS_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], result.output
