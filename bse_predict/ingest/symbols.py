"""The symbols to ingest when the config names none: every trading USDT market of ``exchangeInfo``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from bse_predict.ingest.errors import BadExchangeMessage

__all__ = ["trading_usdt_symbols"]


def trading_usdt_symbols(info: Mapping[str, Any], market: Literal["spot", "futures"]) -> list[str]:
    """Spot: every ``TRADING`` symbol quoted in USDT. Futures: every ``TRADING`` USDT ``PERPETUAL``."""
    symbols = info.get("symbols")
    if not isinstance(symbols, list):
        raise BadExchangeMessage("exchangeInfo without a symbols list")
    chosen = []
    for entry in symbols:
        if not isinstance(entry, Mapping):
            continue
        if entry.get("status") != "TRADING" or entry.get("quoteAsset") != "USDT":
            continue
        if market == "futures" and entry.get("contractType") != "PERPETUAL":
            continue
        chosen.append(str(entry["symbol"]))
    return sorted(chosen)
