"""``bse-predict archive``: closed candles from the ``candles`` topic into a Parquet dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from bse_predict.cli.shared import ConfigOption, command_settings, one_line_errors

__all__ = ["archive"]


@one_line_errors
def archive(
    out: Annotated[str, typer.Option("--out", help="The dataset's folder, or an object-store URL that pyarrow "
                                                   "opens (s3://bucket/prefix); see docs/archive.md.")],
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option("--loglevel", help="critical, error, warning, info or debug.")] = "info",
) -> None:
    """Write closed candles from the candles topic to a Parquet dataset (market=/symbol=/month=) that train,
    evaluate and backtest read with --data OUT.

    A consumer group: run one or several; each closed candle is kept once per symbol and open time (the last
    offset wins), offsets are committed only after the files holding them are durable. Logs every flush and
    its files; stops on SIGTERM/SIGINT after a last flush."""
    from bse_predict.candles.parquet_files import PYARROW_MISSING

    try:
        from bse_predict.archive.run import run_archive
        from bse_predict.archive.store import open_store
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] == "pyarrow":
            raise ValueError(PYARROW_MISSING) from None
        raise

    if loglevel.lower() not in ("critical", "error", "warning", "info", "debug"):
        raise ValueError(f"--loglevel must be critical, error, warning, info or debug, got {loglevel!r}")
    if not out.strip():
        raise ValueError("--out must name a folder or an object-store URL")
    settings = command_settings(config)
    run_archive(settings, open_store(out, settings.archive), loglevel)
