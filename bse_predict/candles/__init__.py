"""Candles: the contract's candle message and its validation, the gap-filled grid, candle files, windows."""
