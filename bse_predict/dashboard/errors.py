"""Errors of the dashboard: why a section of a page has nothing to show."""

from __future__ import annotations

from bse_predict.errors import BsePredictError

__all__ = ["DashboardError", "SourceUnavailable"]


class DashboardError(BsePredictError):
    """Base of the dashboard's errors."""


class SourceUnavailable(DashboardError):
    """A store the page reads (Redis, or Kafka for the consumer lag) did not answer in time; says which and why."""
