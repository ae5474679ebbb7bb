"""Repeated library lines are said once per interval, with the count of those held back."""

from __future__ import annotations

import logging

import pytest

from bse_predict.connections.log_repeats import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_line_passes_once_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("repeat-test.conn")
    logger.addFilter(RepeatFilter(30.0, clock))
    with caplog.at_level(logging.ERROR, logger="repeat-test.conn"):
        for _ in range(50):
            logger.error("Unable connect to node with id %s", 1)
            clock.now += 0.2
        logger.error("something else")
        clock.now = 31.0
        logger.error("Unable connect to node with id %s", 1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["Unable connect to node with id 1", "something else",
                     "Unable connect to node with id 1 (and 49 more like it in the last 30 s)"]
