"""The side-by-side comparison's significance test and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bse_predict.backtest.report import build_backtest, compare_daily, write_report
from bse_predict.backtest.trading import Trade

DAY = 86_400_000


def test_paired_test_finds_a_real_difference_and_not_an_absent_one() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(0.0, 1.0, 200)
    same = compare_daily(a, a.copy())  # identical days
    assert same["mean_daily_difference_pct"] == 0.0 and same["p_value"] == 1.0
    better = compare_daily(a + 0.5, a + rng.normal(0.0, 0.3, 200))
    assert better["p_value"] < 0.01 and better["lower"] > 0
    noise = compare_daily(a, rng.normal(0.0, 1.0, 200))
    assert noise["lower"] < 0 < noise["upper"] and noise["p_value"] > 0.05


def _trades(symbol: str, nets: list[float]) -> list[Trade]:
    return [Trade(symbol, "2%", 1, i * DAY, i * DAY + 3_600_000, 100.0, 102.0 if n > 0 else 98.0,
                  "take_profit" if n > 0 else "stop", n + 0.14, n, 1.0) for i, n in enumerate(nets)]


def test_report_writes_tables_plot_metrics_and_the_comparison(tmp_path: Path) -> None:
    a = build_backtest("V1/ensemble", {"2%": _trades("BTCUSDT", [1.86, -2.14, 1.86, 1.86])}, ["2%"], 0.14,
                       0, 5 * DAY, 5 * 24, predictions=120, degraded=3)
    b = build_backtest("V2/random_forest", {"2%": _trades("BTCUSDT", [-2.14, -2.14, 1.86, -2.14])}, ["2%"], 0.14,
                       0, 5 * DAY, 5 * 24, predictions=120, degraded=0)
    assert a.stats["2%"].hit_rate == 0.75 and a.stats["2%"].break_even_hit_rate == 0.5 + 0.14 / 4
    assert a.daily["all"].sum() == sum([1.86, -2.14, 1.86, 1.86])
    report = write_report(tmp_path, [a, b], ["2%"], {"versions": "V1, V2"}, compare=(0, 1))
    text = report.read_text()
    assert "| V1/ensemble | 4 | 4/0 | 0.750 | 0.535 |" in text and "V1/ensemble against V2/random_forest" in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["models"]["V1/ensemble"]["degraded"] == 3 and set(metrics["comparison"]) == {"2%", "all"}
    assert (tmp_path / "equity.png").stat().st_size > 5_000
