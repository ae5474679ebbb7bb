"""Live klines from the exchange (Binance spot and USDT-M futures) into the ``candles`` topic.

Pure core: :mod:`~bse_predict.ingest.klines` (exchange shapes to the contract's candle),
:mod:`~bse_predict.ingest.gate` (each close once, updates throttled, gaps found),
:mod:`~bse_predict.ingest.backfill` (REST ranges by the exchange's clock, request weights),
:mod:`~bse_predict.ingest.pacing` (weight budget, Retry-After, backoff),
:mod:`~bse_predict.ingest.shards` (streams over connections, SUBSCRIBE messages, rotation),
:mod:`~bse_predict.ingest.symbols` (what exchangeInfo lists). Adapters: the REST client, one stream
connection, the topic's tail, the producer, the metrics, and the supervising :mod:`~bse_predict.ingest.service`.
"""
