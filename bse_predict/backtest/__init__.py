"""Backtest: candle files replayed through the worker's own path, the signals traded as brackets, the report."""
