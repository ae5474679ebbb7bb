"""The candle archive: closed candles from the ``candles`` topic into a Parquet dataset (docs/archive.md).

Core: :mod:`~bse_predict.archive.layout` (partition keys and file names), :mod:`~bse_predict.archive.buffer`
(what waits, deduplicated, and which offsets may be committed), :mod:`~bse_predict.archive.rows` (Arrow
tables and the merge that keeps the last offset), :mod:`~bse_predict.archive.writer` (one flush over any
store). Adapters: :mod:`~bse_predict.archive.store` (local files with fsync, or a pyarrow file system) and
:mod:`~bse_predict.archive.run` (the Kafka consumer group).
"""
