"""Readable labels of the features, for people: one per column of :data:`FEATURE_NAMES`.

What an alert's explanation line and the dashboard's call view show instead of
a column name ("168 h range position" for ``range_position_168``). Built from
:data:`~bse_predict.features.definitions.FEATURE_FAMILIES`, so a new feature family
without a label here fails at import, not in front of a reader. docs/features.md
gives each feature's formula.
"""

from __future__ import annotations

from collections.abc import Callable

from bse_predict.features.definitions import FEATURE_FAMILIES

__all__ = ["FEATURE_LABELS"]


def _volatility_ratio(suffix: str) -> str:
    short, long = suffix.split("_")
    return f"{short} h / {long} h volatility ratio"


def _return_lag(suffix: str) -> str:
    lag = int(suffix)
    return "this hour's return" if lag == 1 else f"return {lag - 1} h ago"


_CANDLE = {"body": "candle body", "upper_wick": "upper wick", "lower_wick": "lower wick", "range": "candle range"}

_BY_FAMILY: dict[str, Callable[[str], str]] = {  # family -> its label from a column's suffix
    "close_to_sma": "close vs {} h average".format,
    "close_to_ema": "close vs {} h EMA".format,
    "bb_position": "{} h Bollinger position".format,
    "bb_width": "{} h Bollinger width".format,
    "rsi": "{} h RSI".format,
    "volume_ratio": "volume vs {} h average".format,
    "volume_trend": "{} h volume trend".format,
    "momentum": "{} h momentum".format,
    "momentum_consistency": "{} h share of rising hours".format,
    "momentum_accel": "{} h momentum acceleration".format,
    "range_position": "{} h range position".format,
    "volatility": "{} h volatility".format,
    "volatility_ratio": _volatility_ratio,
    "atr_ratio": "{} h ATR".format,
    "return_lag": _return_lag,
    "hour": lambda part: f"hour of day ({part})",
    "dow": lambda part: f"day of week ({part})",
    "candle": lambda part: _CANDLE.get(part) or f"candle range in {part.removeprefix('range_atr_')} h ATRs",
    "flat_share": "share of flat hours in {} h".format,
}

FEATURE_LABELS: dict[str, str] = {
    f"{family}_{suffix}": _BY_FAMILY[family](suffix) for family, suffixes in FEATURE_FAMILIES for suffix in suffixes
}
"""Column name -> readable label, in :data:`FEATURE_NAMES` order."""
