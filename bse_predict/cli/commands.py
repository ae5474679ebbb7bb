"""The ``bse-predict`` command: the typer app, built from one module per command group. Heavy modules are
imported inside each command, so ``--help`` is instant and a serving install never imports training code.

The order below is the order ``--help`` lists the commands in, part of the command line's contract."""

from __future__ import annotations

import typer

from bse_predict.cli import alerts, archive, dashboard, ingest, retrain, stream, training, tuning
from bse_predict.cli.control import control_app
from bse_predict.cli.models import models_app
from bse_predict.cli.services import services_app

__all__ = ["main", "app"]

app = typer.Typer(help="Streaming first-touch barrier predictions for crypto candles.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
for command in (training.train, training.evaluate, tuning.tune, training.backtest, stream.worker, alerts.alerts, stream.relay,
                stream.replay, ingest.ingest, stream.bench, stream.demo, archive.archive, retrain.retrain, dashboard.dashboard):
    app.command()(command)
app.add_typer(services_app, name="services")
app.add_typer(models_app, name="models")
app.add_typer(control_app, name="control")


def main() -> None:
    app(prog_name="bse-predict")
