"""The ``bse-predict`` command line: the app in :mod:`bse_predict.cli.commands`, one module per command group."""

from bse_predict.cli.commands import app, main

__all__ = ["app", "main"]
