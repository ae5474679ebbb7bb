"""How often a Redis store renews the expiry of a symbol's keys."""

from __future__ import annotations

__all__ = ["EXPIRY_REFRESH_WRITES"]

EXPIRY_REFRESH_WRITES = 24
"""A symbol's keys get their expiry again every this many closed writes (a day of hourly candles):
renewing on every write cost about 20 us a candle."""
