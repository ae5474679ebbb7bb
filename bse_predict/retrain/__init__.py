"""Retraining without a person: which rows, the holdout and its gate, retention and the schedule (core);
the run and the scheduler that wire the archive, training, the served runners and the control plane."""
