"""Offline training: candle series to a versioned, verified ONNX model set."""
