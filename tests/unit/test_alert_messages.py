"""The words of the alerts: what a chat shows, escaped, with times from the messages."""

from __future__ import annotations

from bse_predict.alerts.messages import format_alert, format_digest, format_followup, format_price, format_summary
from bse_predict.alerts.rules import AlertCall
from bse_predict.alerts.summary_stats import ResolvedCall, summarize
from bse_predict.candles.schema import ModelRef, Outcome, Prediction, TargetPrediction
from bse_predict.explain.explanation import ClassShares, Explanation, FeatureContribution
from tests.support.fake_telegram import parse_telegram_html

HOUR = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


def _call(**update: object) -> AlertCall:
    base = dict(prediction_id=f"BTCUSDT|1h|{T0}", symbol="BTCUSDT", timeframe="1h", open_time=T0, close=93576.0,
                horizon_hours=72, target="2%", direction="up", probability=0.62, confidence=0.71,
                signal="STRONG_BUY", p_up=0.62, p_down=0.25, p_none=0.13, model_name="rf_v2*beta",
                model_version="2026.11-a", variant="control", degraded=False)
    return AlertCall.model_validate({**base, **update})


def _outcome(outcome: str, resolved_at: int) -> Outcome:
    return Outcome(id=f"BTCUSDT|1h|{T0}", symbol="BTCUSDT", open_time=T0, target="2%", outcome=outcome,
                   resolved_at=resolved_at, model=ModelRef(name="rf", version="v"), p_up=0.62, p_down=0.25,
                   p_none=0.13)


def test_alert_text() -> None:
    text = format_alert(_call())
    assert parse_telegram_html(text) == (
        "🟢 BTCUSDT +2% first · STRONG_BUY\n"
        "p(+2% first) 62% · p(-2% first) 25% · neither 13%\n"
        "confidence 71% · price 93,576.00\n"
        "candle 2025-01-01 00:00 UTC · horizon 72 h\n"
        "model rf_v2*beta 2026.11-a · control")


def test_degraded_alert_says_so_and_markup_in_names_is_escaped() -> None:
    text = format_alert(_call(degraded=True, model_name="a<b>&c"))
    plain = parse_telegram_html(text)
    assert "model a<b>&c 2026.11-a" in plain and plain.endswith("degraded: a fallback model answered")


def _column(name: str, label: str, push: float, level: str | None) -> FeatureContribution:
    return FeatureContribution(name=name, label=label, value=0.5, level=level, p_up=push / 2, p_down=-push / 2,
                               p_none=0.0)


def test_an_explained_alert_says_what_pushed_its_call_before_naming_the_model() -> None:
    shares = ClassShares(p_up=0.62, p_down=0.25, p_none=0.13)
    explanation = Explanation(
        prediction_id=f"BTCUSDT|1h|{T0}", target="2%", model=ModelRef(name="rf_v2*beta", version="2026.11-a"),
        method="by hand", base=shares, unexplained=ClassShares(p_up=0.0, p_down=0.0, p_none=0.0), output=shares,
        contributions=(_column("range_position_168", "168 h range position", 0.04, "high"),
                       _column("odd", "spread <&> depth", -0.02, "low"), _column("rsi_6", "6 h RSI", 0.0, None)))
    assert parse_telegram_html(format_alert(_call(), explanation)) == (
        "🟢 BTCUSDT +2% first · STRONG_BUY\n"
        "p(+2% first) 62% · p(-2% first) 25% · neither 13%\n"
        "confidence 71% · price 93,576.00\n"
        "candle 2025-01-01 00:00 UTC · horizon 72 h\n"
        "🔎 pushing up: 168 h range position high; pushing down: spread <&> depth low\n"
        "model rf_v2*beta 2026.11-a · control")
    unmoved = explanation.model_copy(update={"contributions": explanation.contributions[2:]})
    assert format_alert(_call(), unmoved) == format_alert(_call())  # nothing pushed: no line


def test_followups_say_what_happened_and_how_long_it_took() -> None:
    decided = T0 + HOUR  # the call was made at the candle's close
    hit = parse_telegram_html(format_followup(_call(), _outcome("up", decided + 5 * HOUR)))
    assert hit.startswith("✅ +2% first, after 5 h · BTCUSDT")
    miss = parse_telegram_html(format_followup(_call(), _outcome("down", decided + 30 * 60_000)))
    assert miss.startswith("❌ -2% first, after 0.5 h")
    none = parse_telegram_html(format_followup(_call(), _outcome("none", decided + 72 * HOUR)))
    assert none.startswith("⏸ neither ±2% within 72 h")


def test_digest_lists_every_symbol_and_target_with_bells_on_alerts() -> None:
    part = TargetPrediction(p_up=0.5, p_down=0.3, p_none=0.2, direction="up", confidence=0.625, signal="LONG")
    predictions = [Prediction(id=f"{s}|1h|{T0}", symbol=s, timeframe="1h", open_time=T0, close=c, horizon_hours=72,
                              targets={"5%": part, "1%": part}, model=ModelRef(name="rf", version="v1"),
                              latency_ms=1.0) for s, c in (("SOLUSDT", 188.5), ("BTCUSDT", 93576.0))]
    text = parse_telegram_html(format_digest(T0, 1, predictions, {(f"BTCUSDT|1h|{T0}", "5%")}))
    lines = text.splitlines()
    assert lines[0] == "🕐 Digest · hour from 2025-01-01 00:00 UTC"
    assert lines[3].startswith("BTCUSDT 93,576.00") and lines[7].startswith("SOLUSDT 188.50")
    assert lines[4].strip().startswith("1% 🟢 LONG") and lines[5].strip().startswith("5% 🟢 LONG")
    assert lines[5].endswith("🔔") and not lines[4].endswith("🔔") and not lines[9].endswith("🔔")


def test_summary_text() -> None:
    calls = [ResolvedCall(symbol="BTCUSDT", target="1%", outcome="up", p_up=0.6, p_down=0.3, p_none=0.1,
                          alerted=True, resolved_at=T0)] * 3
    stats = summarize(calls, T0 - HOUR, T0 + HOUR, 2)
    plain = parse_telegram_html(format_summary(T0, stats, 7))
    assert plain.startswith("📊 Daily summary · 2025-01-01")
    assert "all: hit 100% vs base 100% (+0.0 pts)" in plain and "alerts 3 hit 100%" in plain
    assert "🏆 best: symbol BTCUSDT (+0.0 pts, n 3) · target 1% (+0.0 pts, n 3) · pair BTCUSDT 1% (+0.0 pts, n 3)" in plain
    assert "worst" not in plain  # one group of each kind: nothing to call worst
    assert "no prediction resolved" in parse_telegram_html(format_summary(T0, None, 7))


def test_prices_keep_useful_digits() -> None:
    assert [format_price(p) for p in (93576.04, 2.5, 0.321, 0.00001234)] == ["93,576.04", "2.5000", "0.321000",
                                                                           "1.234e-05"]
