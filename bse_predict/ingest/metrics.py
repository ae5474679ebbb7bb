"""Counters of the ingest process on a private Prometheus registry, served on ``ingest.metrics_port``
(0 = off). Gaps the exchange itself has are counted here (``bse_ingest_gap_candles_total``) and kept in
:attr:`IngestMetrics.gaps` for the process's own report; a gap's candle that the exchange published later is
counted in ``bse_ingest_gap_filled_candles_total`` (a counter cannot go down: the gaps still open are the
difference) and kept in :attr:`IngestMetrics.filled`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server

from bse_predict.ingest.gate import Gap

__all__ = ["IngestMetrics"]


class IngestMetrics:
    def __init__(self, market: str, port: int = 0) -> None:
        self.market = market
        self.registry = CollectorRegistry()
        self.closed = Counter("bse_ingest_closed_candles", "Closed candles produced", ["market", "source"],
                              registry=self.registry)
        self.updates = Counter("bse_ingest_updates", "In-progress updates produced", ["market"],
                               registry=self.registry)
        self.duplicates = Counter("bse_ingest_duplicate_closes", "Closed candles dropped as already produced",
                                  ["market"], registry=self.registry)
        self.gap_candles = Counter("bse_ingest_gap_candles", "Candles the exchange does not have (reported, never "
                                   "filled)", ["market", "symbol"], registry=self.registry)
        self.gap_filled_candles = Counter("bse_ingest_gap_filled_candles", "Candles reported as the exchange's gap "
                                          "that it published later (produced late; the report corrected)",
                                          ["market", "symbol"], registry=self.registry)
        self.connections = Counter("bse_ingest_connections", "WebSocket connections opened, by reason",
                                   ["market", "reason"], registry=self.registry)
        self.bad_messages = Counter("bse_ingest_bad_messages", "Exchange messages that were not a valid kline",
                                    ["market"], registry=self.registry)
        self.gaps: list[Gap] = []
        self.filled: list[tuple[str, int]] = []
        if port:
            start_http_server(port, registry=self.registry)

    def gap(self, gap: Gap) -> None:
        self.gaps.append(gap)
        self.gap_candles.labels(self.market, gap.symbol).inc(gap.candles)

    def gap_filled(self, symbol: str, open_ms: int) -> None:
        """A candle of a reported gap came after all: ``bse_ingest_gap_candles_total`` minus this counter is what
        the exchange still lacks."""
        self.filled.append((symbol, open_ms))
        self.gap_filled_candles.labels(self.market, symbol).inc()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when it has none yet), for reports and tests."""
        found = self.registry.get_sample_value(f"{name}_total", {"market": self.market, **labels})
        return found or 0.0
