"""The Faust worker: the candle processor, window store, publisher, rebuild, batch guard; IO around the cores."""
