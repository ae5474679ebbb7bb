"""The ``bse-predict`` command line (:mod:`bse_predict.cli.commands`)."""

from bse_predict.cli.commands import app, main

__all__ = ["app", "main"]
