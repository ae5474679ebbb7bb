"""``python -m bse_predict.cli``: what the ``bse-predict`` script runs."""

from bse_predict.cli.commands import main

main()
