"""Live monitoring: outcomes of published predictions, live scores, drift, the champion/challenger test."""
