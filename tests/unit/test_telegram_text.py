"""Telegram HTML escaping and message splitting: hand-checked cases and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bse_predict.alerts.telegram_text import escape_html, plain_text, split_message, telegram_length
from tests.support.fake_telegram import TelegramHtmlError, parse_telegram_html

MARKUP = "_*.-[]()~`>#+=|{}!<&\\"


def test_escape_keeps_markdown_characters_and_escapes_the_three_html_ones() -> None:
    assert escape_html("rf_v2*beta.1-x") == "rf_v2*beta.1-x"
    assert escape_html("a<b>&c") == "a&lt;b&gt;&amp;c"
    assert escape_html("&amp;") == "&amp;amp;"  # escaped once more: the reader sees "&amp;"


def test_telegram_counts_utf16_units() -> None:
    assert telegram_length("abc") == 3
    assert telegram_length("📊") == 2
    assert telegram_length("⬆️") == 2  # arrow + variation selector


def test_split_keeps_lines_whole_and_under_the_limit() -> None:
    lines = [f"<b>LINE{i:03d}</b> " + "x" * 50 for i in range(200)]
    text = "\n".join(lines)
    parts = split_message(text, 1000)
    assert len(parts) > 1
    assert all(telegram_length(p) <= 1000 for p in parts)
    assert "\n".join(parts) == text
    for part in parts:
        parse_telegram_html(part)  # every part is valid Telegram HTML on its own


def test_short_text_is_one_part() -> None:
    assert split_message("hello\nworld") == ["hello\nworld"]


def test_a_line_over_the_limit_is_cut_at_a_space_and_never_inside_an_entity() -> None:
    line = " ".join(["a&amp;b"] * 100)
    parts = split_message(line, 64)
    assert all(telegram_length(p) <= 64 for p in parts)
    assert "".join(parts) == line
    for part in parts:
        assert plain_text(part).count("&") == part.count("&amp;")  # no entity was cut in two
        assert part.endswith(" ") or part == parts[-1]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        split_message("x", 0)


@given(st.text(alphabet=st.sampled_from(list(MARKUP) + list("abcXYZ 019😀é")), max_size=300))
def test_any_escaped_text_parses_back_to_itself(raw: str) -> None:
    assert parse_telegram_html(escape_html(raw)) == raw
    assert plain_text(escape_html(raw)) == raw


@given(st.text(alphabet=st.sampled_from(list("<&>")), min_size=1, max_size=5))
def test_unescaped_markup_is_what_telegram_refuses(raw: str) -> None:
    with pytest.raises(TelegramHtmlError):
        parse_telegram_html(f"x{raw}y")


lines = st.lists(st.text(alphabet=st.sampled_from(list(MARKUP) + list("ab 😀")), max_size=120), min_size=1,
                 max_size=60)


@settings(max_examples=200)
@given(lines, st.integers(min_value=40, max_value=500))
def test_split_properties(raw_lines: list[str], limit: int) -> None:
    text = "\n".join(f"<b>{escape_html(line[:10])}</b>{escape_html(line[10:])}" for line in raw_lines)
    parts = split_message(text, limit)
    assert all(telegram_length(p) <= limit for p in parts)
    if all(telegram_length(line) <= limit for line in text.split("\n")):
        assert "\n".join(parts) == text  # nothing lost, nothing doubled, order kept
        for part in parts:
            parse_telegram_html(part)
    assert "\n".join(parts).replace("\n", "") == text.replace("\n", "")  # a cut line only gains line ends
