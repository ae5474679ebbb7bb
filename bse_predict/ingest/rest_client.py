"""The exchange's REST API over aiohttp: server time, klines, exchangeInfo, within the weight budget.

Every request first waits what :class:`~bse_predict.ingest.pacing.WeightBudget` says (the weight limit of
the minute, or a ``Retry-After`` still running), then spends its weight; the exchange's
``X-MBX-USED-WEIGHT-1M`` corrects the count. A 429 or 418 blocks every request for its ``Retry-After``
(the backoff when it has none); a 5xx, a timeout or a dropped connection is retried after the backoff,
for as long as it takes. Another 4xx is :class:`~bse_predict.ingest.errors.ExchangeRefused`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson

from configs.settings import IngestConfig, IngestMarket
from bse_predict.ingest.backfill import KlineRequest, klines_weight
from bse_predict.ingest.errors import ExchangeRefused
from bse_predict.ingest.pacing import WeightBudget, backoff_delay_s, parse_retry_after_s

__all__ = ["ExchangeRest"]

log = logging.getLogger(__name__)

_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


class ExchangeRest:
    def __init__(self, config: IngestConfig, market: IngestMarket, *, draw: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._market = market
        self._endpoints = config.endpoints(market)
        self._budget = WeightBudget(max(1, int(self._endpoints.weight_per_minute * config.weight_budget_fraction)))
        self._draw = draw
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.rate_limited = 0
        """How many 429 and 418 answers arrived."""
        self.requests = 0

    async def __aenter__(self) -> ExchangeRest:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._config.request_timeout_s))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def budget(self) -> WeightBudget:
        return self._budget

    async def server_time_ms(self) -> int:
        answer = await self._get(self._endpoints.time_path, {}, 1)
        return int(answer["serverTime"])

    async def klines(self, symbol: str, interval: str, request: KlineRequest) -> list[list[Any]]:
        params = {"symbol": symbol, "interval": interval, "startTime": request.start_ms, "endTime": request.end_ms,
                  "limit": request.limit}
        rows = await self._get(self._endpoints.klines_path, params, klines_weight(self._market, request.limit))
        if not isinstance(rows, list):
            raise ExchangeRefused(f"klines of {symbol}: expected a list, got {type(rows).__name__}")
        return rows

    async def exchange_info(self) -> Mapping[str, Any]:
        return await self._get(self._endpoints.exchange_info_path, {}, 20 if self._market == "spot" else 1)

    async def _get(self, path: str, params: Mapping[str, Any], weight: int) -> Any:
        assert self._session is not None, "use ExchangeRest as an async context manager"
        url = f"{self._endpoints.rest_url}{path}"
        attempt = 0
        while True:
            delay = self._budget.delay_s(weight, self._clock())
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._budget.spend(weight, self._clock())
            self.requests += 1
            try:
                async with self._session.get(url, params={k: str(v) for k, v in params.items()}) as response:
                    used = response.headers.get(_WEIGHT_HEADER)
                    if used is not None and used.isdigit():
                        self._budget.observe_used(int(used), self._clock())
                    if response.status in (429, 418):
                        self.rate_limited += 1
                        wait = parse_retry_after_s(response.headers.get("Retry-After"))
                        if wait is None:
                            wait = self._backoff(attempt)
                        attempt += 1
                        self._budget.block_for(wait, self._clock())
                        log.warning("%s answered %d on %s: no request for %.1f s (Retry-After)",
                                    self._market, response.status, path, wait)
                        continue
                    body = await response.read()
                    if response.status >= 500:
                        raise aiohttp.ClientResponseError(response.request_info, (), status=response.status,
                                                          message=body[:200].decode("utf-8", "replace"))
                    if response.status >= 400:
                        raise ExchangeRefused(f"{path} {dict(params)} answered {response.status}: "
                                              f"{body[:200].decode('utf-8', 'replace')}")
                    return orjson.loads(body)
            except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError) as error:
                wait = self._backoff(attempt)
                attempt += 1
                log.warning("%s request %s failed (%r): retry in %.1f s", self._market, path, error, wait)
                await asyncio.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay_s(attempt, self._config.backoff_initial_s, self._config.backoff_max_s, self._draw())
