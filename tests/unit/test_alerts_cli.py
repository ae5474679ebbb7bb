"""`bse-predict alerts` refuses to start without its secrets, in one line; shadow is never read; the chart."""

from __future__ import annotations

import builtins
import logging

import pytest
from typer.testing import CliRunner

from bse_predict.cli import app
from configs.settings import load_settings
from bse_predict.alerts.summary_stats import ResolvedCall, summarize
from bse_predict.alerts import chart
from bse_predict.alerts.run import subscribed_topics
from bse_predict.connections.topics import TopicNames

runner = CliRunner()


@pytest.mark.parametrize(("env", "reason"), [
    ({"TELEGRAM_CHAT_ID": "5"}, "TELEGRAM_BOT_TOKEN is not set"),
    ({"TELEGRAM_BOT_TOKEN": "1:abc"}, "TELEGRAM_CHAT_ID is not set"),
    ({"TELEGRAM_BOT_TOKEN": "1:abc", "TELEGRAM_CHAT_ID": " , "}, "TELEGRAM_CHAT_ID is not set"),
    ({"TELEGRAM_BOT_TOKEN": "1:abc", "TELEGRAM_CHAT_ID": "5", "TELEGRAM_API_URL": "ftp://x/1:abc"},
     "TELEGRAM_API_URL must be an http(s) URL"),
])
def test_alerts_refuses_to_start_without_token_or_chat(env: dict[str, str], reason: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID", "TELEGRAM_API_URL"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["alerts"], env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0]
    assert "1:abc" not in result.output


def test_alerts_has_help_and_config() -> None:
    result = runner.invoke(app, ["alerts", "--help"])
    assert result.exit_code == 0 and "--config" in result.output


def test_shadow_predictions_are_never_subscribed() -> None:
    settings = load_settings(topic_prefix="p.")
    names = TopicNames.of(settings)
    assert subscribed_topics(settings) == (names.predictions, names.outcomes)
    assert names.predictions_shadow not in subscribed_topics(settings)


def _stats():  # noqa: ANN202
    calls = [ResolvedCall(symbol="BTCUSDT", target=t, outcome=o, p_up=0.6, p_down=0.3, p_none=0.1, alerted=False,
                          resolved_at=1) for t in ("1%", "2%") for o in ("up", "down", "none")]
    return summarize(calls, 0, 10, 1)


def test_chart_is_a_png() -> None:
    png = chart.summary_chart_png(_stats(), "title")
    assert png is not None and png.startswith(b"\x89PNG")


def test_without_matplotlib_the_summary_is_text_only_and_the_log_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(chart, "_warned", False)
    with caplog.at_level(logging.WARNING):
        assert chart.summary_chart_png(_stats(), "title") is None
        assert chart.summary_chart_png(_stats(), "title") is None
    assert caplog.text.count("matplotlib is not installed") == 1
