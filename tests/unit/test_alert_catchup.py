"""The catch-up note and the staleness rule: calls too old to be alerts, listed together."""

from __future__ import annotations

import pytest

from bse_predict.alerts.messages import format_catchup, format_followup
from bse_predict.alerts.rules import AlertCall, is_stale
from bse_predict.candles.schema import ModelRef, Outcome
from bse_predict.alerts.telegram_text import split_message, telegram_length
from tests.support.fake_telegram import parse_telegram_html

HOUR = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC


def _call(symbol: str = "BTCUSDT", open_time: int = T0, **update: object) -> AlertCall:
    base = dict(prediction_id=f"{symbol}|1h|{open_time}", symbol=symbol, timeframe="1h", open_time=open_time,
                close=93576.0, horizon_hours=72, target="2%", direction="up", probability=0.62, confidence=0.71,
                signal="STRONG_BUY", p_up=0.62, p_down=0.25, p_none=0.13, model_name="rf", model_version="v1",
                variant="control", degraded=False)
    return AlertCall.model_validate({**base, **update})


def _outcome(call: AlertCall, outcome: str, resolved_at: int) -> Outcome:
    return Outcome(id=call.prediction_id, symbol=call.symbol, open_time=call.open_time, target=call.target,
                   outcome=outcome, resolved_at=resolved_at, model=ModelRef(name="rf", version="v1"),
                   p_up=call.p_up, p_down=call.p_down, p_none=call.p_none)


def test_a_call_is_stale_once_its_candle_closed_longer_ago_than_the_setting() -> None:
    call = _call()  # candle 00:00-01:00
    closed = T0 + HOUR
    assert not is_stale(call, closed, 3)
    assert not is_stale(call, closed + 3 * HOUR, 3)  # exactly the limit: still news
    assert is_stale(call, closed + 3 * HOUR + 1, 3)
    assert not is_stale(call, closed - HOUR, 3)  # a clock behind the stream is never stale


def test_the_note_lists_each_call_oldest_first_with_the_known_outcomes() -> None:
    eth = _call("ETHUSDT", T0 + 2 * HOUR, target="1%", direction="down", probability=0.65, signal="SHORT",
                close=2162.74)
    btc = _call()
    sol = _call("SOLUSDT", T0 + 5 * HOUR, target="5%", probability=0.4, signal="LONG", close=0.3217)
    text = format_catchup([(sol, None), (eth, _outcome(eth, "down", eth.decided_at_ms + HOUR)),
                           (btc, _outcome(btc, "none", btc.decided_at_ms + 72 * HOUR))], 3)
    assert parse_telegram_html(text) == (
        "⏪ Catch-up · 3 calls not sent as alerts\n"
        "candles 2025-01-01 00:00 UTC to 2025-01-01 05:00 UTC\n"
        "each was more than 3 h old when it could be sent; outcomes still open are answered in replies\n"
        "\n"
        "🟢 BTCUSDT +2% · STRONG_BUY 62% · 01-01 00:00 · 93,576.00 → ⏸ neither ±2% within 72 h\n"
        "🔴 ETHUSDT -1% · SHORT 65% · 01-01 02:00 · 2,162.74 → ✅ -1% first, after 1 h\n"
        "🟢 SOLUSDT +5% · LONG 40% · 01-01 05:00 · 0.321700")


def test_a_missed_call_reads_as_a_miss_and_one_call_is_singular() -> None:
    call = _call()
    text = parse_telegram_html(format_catchup([(call, _outcome(call, "down", call.decided_at_ms + 2 * HOUR))], 1.5))
    assert text.startswith("⏪ Catch-up · 1 call not sent as alerts\n")
    assert "more than 1.5 h old" in text
    assert text.endswith("→ ❌ -2% first, after 2 h")


def test_names_are_escaped_and_an_empty_note_is_refused() -> None:
    text = format_catchup([(_call("A<B>&C"), None)], 3)
    assert "A&lt;B&gt;&amp;C" in text and "A<B>&C +2%" in parse_telegram_html(text)
    with pytest.raises(ValueError, match="at least one call"):
        format_catchup([], 3)


def test_a_long_backlog_splits_at_line_ends_within_telegrams_limit() -> None:
    calls = [(_call(f"SYM{i % 40}USDT", T0 + i * HOUR), None) for i in range(400)]
    text = format_catchup(calls, 3)
    parts = split_message(text, 4096)
    assert telegram_length(text) > 3 * 4096 and len(parts) >= 4
    assert all(telegram_length(p) <= 4096 for p in parts)
    assert "\n".join(parts) == text  # whole lines, in order
    for part in parts:
        parse_telegram_html(part)  # every part is HTML Telegram accepts


def test_a_follow_up_to_a_caught_up_call_names_its_candle() -> None:
    call = _call()
    outcome = _outcome(call, "up", call.decided_at_ms + 5 * HOUR)
    live = parse_telegram_html(format_followup(call, outcome))
    caught_up = parse_telegram_html(format_followup(call, outcome, caught_up=True))
    assert caught_up == live + "\nfrom the catch-up note: candle 2025-01-01 00:00 UTC"
