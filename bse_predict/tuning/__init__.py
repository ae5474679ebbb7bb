"""Hyperparameter search over purged walk-forward folds, scored honestly on later folds (``bse-predict tune``)."""
