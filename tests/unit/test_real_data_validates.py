"""The default candle rules let every real candle in: each file of ../shared/data, as the producers send
it, through the validator, and through the last-close jump rule in sequence. Zero refusals.

Each candle is checked at the very moment it closes (``now`` = its close time, no skew to spare). An
in-progress update carries the same prices and passes the open-time rule from its first moment, so it
would only double the run time (test_candle_plausibility.py covers that rule). The measured extremes
must also stay well inside the defaults (written beside them in configs/default.yaml, docs/candles.md).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from configs.settings import load_settings
from bse_predict.candles.files import CandleSeries, read_candle_files
from bse_predict.candles.plausibility import price_jump_refusals
from bse_predict.errors import InvalidCandle
from bse_predict.candles.schema import Candle, parse_candle
from tests.conftest import SHARED_DATA
from bse_predict.stream.replay import candle_payload

pytestmark = pytest.mark.slow  # every real candle of ../shared/data: seconds

MARGIN = 2.0  # every measured extreme at least this far inside its bound (a ratio bound: in log terms)


@pytest.fixture(scope="module")
def every_series() -> list[CandleSeries]:
    folders = sorted(p for p in SHARED_DATA.iterdir() if p.is_dir()) if SHARED_DATA.is_dir() else []
    if not folders:
        pytest.fail(f"real candles are missing: {SHARED_DATA} (the repo expects ../shared beside it)")
    return read_candle_files(folders)


def test_every_real_candle_passes_every_rule(every_series: list[CandleSeries]) -> None:
    rules = load_settings().candles
    refused: Counter[str] = Counter()
    examples: list[str] = []
    checked = 0
    for series in every_series:
        key, step = series.symbol.encode(), series.step_ms
        candles: list[Candle] = []
        for t, row in zip(series.open_time_ms.tolist(), series.ohlcv.tolist(), strict=True):
            try:
                candles.append(parse_candle(candle_payload(series.symbol, series.timeframe, t, row, True), rules,
                                            t + step, key, frozenset({series.timeframe})))
            except InvalidCandle as error:
                refused[error.kind] += 1
                examples.append(f"{series.source.name} {t}: {error}")
        for candle, jump in zip(candles, price_jump_refusals(candles, {}, rules), strict=True):
            if jump is not None:
                refused[jump.kind] += 1
                examples.append(f"{series.source.name} {candle.open_time}: {jump}")
        checked += len(candles)
    assert not refused, (refused, examples[:5])
    assert checked == sum(len(s.open_time_ms) for s in every_series) > 600_000


def test_the_measured_extremes_sit_well_inside_the_defaults(every_series: list[CandleSeries]) -> None:
    rules = load_settings().candles
    ohlcv = np.concatenate([s.ohlcv for s in every_series])
    high_low = float(np.max(ohlcv[:, 1] / ohlcv[:, 2]))
    jumps = [np.abs(np.log(s.ohlcv[1:, 3] / s.ohlcv[:-1, 3])).max() for s in every_series]
    assert ohlcv[:, 2].min() >= rules.min_price * MARGIN and ohlcv[:, 1].max() * MARGIN <= rules.max_price
    assert ohlcv[:, 4].max() * MARGIN <= rules.max_volume
    assert np.log(high_low) * MARGIN <= np.log(rules.max_high_low_ratio)
    assert max(jumps) * MARGIN <= np.log(rules.max_close_jump_ratio)
