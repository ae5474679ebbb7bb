"""Serving: the manifest, ONNX runners, the router with its breakers and A/B arms, and the per-target call."""
