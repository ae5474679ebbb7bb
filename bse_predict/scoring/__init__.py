"""Scores of class probabilities (up, down, none): confidence, the called side, log loss, Brier, calibration bins."""
