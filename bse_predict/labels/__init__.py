"""First-touch barrier labels: the one rule for training and for live outcomes."""
