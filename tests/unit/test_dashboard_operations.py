"""The operations page's parts that need no server: served versions' breakers lined up with the control
state, drift grouped by feature family (max and mean PSI by hand), the lag count."""

from __future__ import annotations

import pytest

from bse_predict.connections.consumer_lag import PartitionLag, lag_of
from bse_predict.control.state_machine import ControlState, Ramp
from bse_predict.dashboard.breakers import BreakerReport, breaker_rows, served_roles
from bse_predict.dashboard.drift_groups import group_psi
from bse_predict.features.definitions import FEATURE_FAMILIES, FEATURE_FAMILY_OF, FEATURE_NAMES
from bse_predict.serving.routing import Arm


def test_every_feature_column_has_its_family() -> None:
    assert list(FEATURE_FAMILY_OF) == list(FEATURE_NAMES)
    assert set(FEATURE_FAMILY_OF.values()) == {family for family, _ in FEATURE_FAMILIES}
    assert FEATURE_FAMILY_OF["range_position_168"] == "range_position"
    assert FEATURE_FAMILY_OF["volatility_ratio_24_168"] == "volatility_ratio"
    assert FEATURE_FAMILY_OF["candle_range_atr_24"] == "candle"


def test_drift_is_grouped_by_family_with_max_mean_and_count_over_the_threshold() -> None:
    psi = {"volatility_6": 0.4, "volatility_24": 0.1, "volatility_168": 0.31, "rsi_6": 0.02, "rsi_12": 0.04,
           "range_position_168": 0.2, "an_old_feature": 0.5}
    groups = group_psi(psi, threshold=0.25)
    assert [g.family for g in groups] == ["other", "volatility", "range_position", "rsi"]  # largest PSI first
    volatility = groups[1]
    assert volatility.features == 3 and volatility.max_psi == 0.4 and volatility.worst == "volatility_6"
    assert volatility.mean_psi == pytest.approx((0.4 + 0.1 + 0.31) / 3) and volatility.over == 2
    assert groups[3].mean_psi == pytest.approx(0.03) and groups[3].over == 0
    assert group_psi({}, 0.25) == []


def test_served_roles_name_every_version_the_state_serves() -> None:
    state = ControlState(live="v1", arms=(Arm("control", "v1", 0.9), Arm("b", "v2", 0.1)), shadow="v3",
                         fallback="v0", ramp=Ramp(version="v2", shares=(0.0, 0.5)))
    assert served_roles(state, "v9") == {"v1": ["live", "arm control × 0.9"], "v2": ["arm b × 0.1", "ramping"],
                                         "v3": ["shadow"], "v0": ["fallback"]}
    assert served_roles(ControlState(), "v9") == {"v9": ["live"]}
    assert served_roles(None, "v9") == {"v9": ["live (newest in the models folder)"]}
    assert served_roles(None, None) == {}


def test_breaker_rows_show_a_version_without_reports_as_closed_and_when_an_open_one_probes() -> None:
    reports = [BreakerReport("v1", "w2", "open", "2026-01-01T00:00:00Z", "NaN output"),
               BreakerReport("v1", "w1", "closed", "2026-01-01T00:05:00Z", None),
               BreakerReport("v7", "w1", "open", "2026-01-01T00:00:00Z", "old")]  # no longer served
    rows = breaker_rows({"v1": ["live"], "v2": ["fallback"]}, reports, open_s=60)
    assert [(r["version"], r["worker"], r["status"], r["probe_from"]) for r in rows] == [
        ("v1", "w1", "closed", None), ("v1", "w2", "open", "2026-01-01 00:01:00"), ("v2", None, "closed", None)]
    unknown = breaker_rows({}, reports, open_s=60)  # no control state: every reported version
    assert {r["version"] for r in unknown} == {"v1", "v7"} and unknown[0]["role"] == "not known (no control state)"


def test_the_lag_counts_from_the_committed_offset_or_from_the_beginning() -> None:
    assert lag_of(40, 0, 100) == 60
    assert lag_of(None, 10, 100) == 90  # nothing committed: every record kept waits
    assert lag_of(-1, 10, 100) == 90
    assert lag_of(5, 10, 100) == 90  # committed before what the retention kept
    assert lag_of(100, 0, 100) == 0 and lag_of(120, 0, 100) == 0
    assert PartitionLag(3, 40, 0, 100).lag == 60
