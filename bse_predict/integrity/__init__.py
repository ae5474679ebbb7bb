"""What makes bytes trustworthy: the one signature formula, strict JSON, restricted unpickling, self-contained ONNX."""
