"""``bse-predict ingest``: live klines from the exchange into ``candles`` (docs/ingest.md).

One :class:`ExchangeEndpoints` per market (Binance spot, Binance USDT-M futures): where the REST API and the
WebSocket streams are, and the exchange's documented limits that the client stays under. The URLs are
settings so that the tests point them at the local simulator (``tests/support/exchange_sim.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from configs.base import FrozenBlock

__all__ = ["IngestMarket", "ExchangeEndpoints", "IngestConfig"]

IngestMarket = Literal["spot", "futures"]


class ExchangeEndpoints(FrozenBlock):
    """One market of the exchange: its URLs and the limits it documents."""

    rest_url: str
    ws_url: str = Field(description="the WebSocket base, route included; combined streams are at <ws_url>/stream")
    klines_path: str
    time_path: str
    exchange_info_path: str
    max_streams_per_connection: int = Field(gt=0)
    weight_per_minute: int = Field(gt=0, description="the exchange's REQUEST_WEIGHT limit per minute and IP")
    klines_limit: int = Field(gt=0, description="candles asked for per REST request")

    @field_validator("rest_url", "ws_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


def _spot() -> ExchangeEndpoints:
    return ExchangeEndpoints(rest_url="https://api.binance.com", ws_url="wss://stream.binance.com:9443",
                             klines_path="/api/v3/klines", time_path="/api/v3/time",
                             exchange_info_path="/api/v3/exchangeInfo", max_streams_per_connection=1024,
                             weight_per_minute=6000, klines_limit=1000)


def _futures() -> ExchangeEndpoints:
    return ExchangeEndpoints(rest_url="https://fapi.binance.com", ws_url="wss://fstream.binance.com/market",
                             klines_path="/fapi/v1/klines", time_path="/fapi/v1/time",
                             exchange_info_path="/fapi/v1/exchangeInfo", max_streams_per_connection=200,
                             weight_per_minute=2400, klines_limit=499)


class IngestConfig(FrozenBlock):
    market: IngestMarket = "futures"
    symbols: tuple[str, ...] = Field((), description="empty: every trading USDT pair (spot) or perpetual (futures)")
    spot: ExchangeEndpoints = Field(default_factory=_spot)
    futures: ExchangeEndpoints = Field(default_factory=_futures)
    update_interval_s: float = Field(5.0, ge=0, description="in-progress updates per symbol at most this often")
    weight_budget_fraction: float = Field(0.5, gt=0, le=1, description="share of the weight limit used")
    subscribe_interval_s: float = Field(0.5, gt=0, description="between two SUBSCRIBE messages on a connection")
    streams_per_subscribe: int = Field(100, gt=0)
    rotate_after_s: float = Field(82_800.0, gt=0, description="a connection is replaced after this long")
    ping_interval_s: float = Field(20.0, gt=0)
    ping_timeout_s: float = Field(60.0, gt=0)
    open_timeout_s: float = Field(10.0, gt=0)
    request_timeout_s: float = Field(10.0, gt=0)
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    backfill_max_candles: int = Field(1000, gt=0, description="with nothing in the topic, this many closed candles")
    gap_confirm_after_s: float = Field(120.0, ge=0, description="exchange time after a missing candle's close "
                                                                 "before it counts as the exchange's gap")
    tail_scan_messages: int = Field(20_000, gt=0, description="per partition, how far back the last closed candle "
                                                              "of each symbol is looked for")
    restart_lookback_candles: int = Field(168, gt=0, description="at a start, the closed candles each symbol has "
                                          "in the topic are read back this far below its newest, and every hole "
                                          "the exchange can fill is backfilled")
    restart_scan_max_messages: int = Field(1_000_000, gt=0, description="per partition, at most this many records "
                                           "read for the lookback (beyond: candles may be sent twice, never lost)")
    gap_recheck_interval_s: float = Field(900.0, gt=0, description="the exchange is asked again this often for "
                                          "the candles reported as its gaps")
    metrics_port: int = Field(0, ge=0, description="Prometheus /metrics; 0 = off")
    client_id: str = "bse-predict-ingest"

    @field_validator("symbols")
    @classmethod
    def _upper_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(s.strip().upper() for s in value if s.strip())
        bad = [s for s in cleaned if not s.isalnum()]
        if bad:
            raise ValueError(f"ingest.symbols must be letters and digits, got {bad}")
        return cleaned

    def endpoints(self, market: IngestMarket) -> ExchangeEndpoints:
        return self.spot if market == "spot" else self.futures
