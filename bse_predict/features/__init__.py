"""The one feature definition, the per-hour sequences, and the model inputs built from gap-filled windows."""
