"""The ``bse-predict`` command line (:mod:`bse_predict.cli.control`)."""

from bse_predict.cli.control import app, main

__all__ = ["app", "main"]
