"""Offline evaluation: purged walk-forward folds, baselines, calibration, scores, bootstrap intervals, the report."""
