"""The Bot API client against the local fake server: pacing, 429/5xx retries, refusals, no token in errors.

The clock and the sleep are injected (sleeping advances the clock), so the
waits are checked exactly and the tests take no real waiting time.
"""

from __future__ import annotations

import logging
import socket

import pytest
from pydantic import SecretStr

from configs.settings import AlertsConfig
from tests.support.fake_telegram import FakeTelegram
from tests.support.fake_time import FakeTime
from bse_predict.alerts.errors import TelegramRefused, TelegramUnavailable
from bse_predict.alerts.telegram import TelegramClient

TOKEN = "777:SECRET_token-value.x"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64



@pytest.fixture
def telegram() -> FakeTelegram:
    with FakeTelegram(TOKEN) as fake:
        yield fake


def _client(url: str, fake_time: FakeTime, **config: object) -> TelegramClient:
    settings = AlertsConfig(**{"rate_per_chat_per_s": 1.0, "burst_per_chat": 2, "backoff_initial_s": 0.5,
                               "max_attempts": 4, "request_timeout_s": 5, **config})
    return TelegramClient(url, SecretStr(TOKEN), settings, clock=fake_time.clock, sleep=fake_time.sleep)


async def test_messages_photos_and_replies_arrive(telegram: FakeTelegram) -> None:
    async with _client(telegram.url, FakeTime()) as client:
        first = await client.send_message("42", "<b>a_b*c.d-e</b> &amp; co")
        reply = await client.send_message("42", "re", reply_to=first)
        photo = await client.send_photo("42", PNG, "<i>chart</i>")
    got = telegram.snapshot()
    assert [r.message_id for r in got] == [first, reply, photo] == [1, 2, 3]
    assert got[0].plain == "a_b*c.d-e & co" and got[0].parse_mode == "HTML"
    assert got[1].reply_to == first
    assert got[2].method == "sendPhoto" and got[2].photo == PNG and got[2].plain == "chart"


async def test_one_chat_is_paced_to_its_rate_after_a_burst(telegram: FakeTelegram) -> None:
    fake_time = FakeTime()
    async with _client(telegram.url, fake_time) as client:
        for i in range(5):
            await client.send_message("1", f"m{i}")
        await client.send_message("2", "another chat is not held up")
    assert sum(fake_time.sleeps) == pytest.approx(3.0)  # burst of 2, then one a second
    assert len(telegram.snapshot()) == 6


async def test_429_waits_retry_after_and_500_backs_off(telegram: FakeTelegram, caplog: pytest.LogCaptureFixture) -> None:
    fake_time = FakeTime()
    telegram.fail_next(500, 2)
    telegram.fail_next(429, 1, retry_after=7)
    with caplog.at_level(logging.WARNING):
        async with _client(telegram.url, fake_time, burst_per_chat=10) as client:
            assert await client.send_message("1", "hello") == 1
    assert client.attempts == 4
    assert fake_time.sleeps[:2] == [0.5, 1.0]  # backoff after each 500
    assert sum(fake_time.sleeps[2:]) >= 7.0  # the 429's retry_after
    assert [s for _, s, _ in telegram.refusals] == [500, 500, 429]
    assert TOKEN not in caplog.text and "attempt 3 of 4" in caplog.text


async def test_attempts_run_out_with_a_clean_error(telegram: FakeTelegram) -> None:
    telegram.fail_next(502, 10)
    async with _client(telegram.url, FakeTime()) as client:
        with pytest.raises(TelegramUnavailable) as error:
            await client.send_message("1", "x")
    assert "failed 4 times" in str(error.value) and TOKEN not in str(error.value)
    assert error.value.may_have_delivered  # a 5xx does not say the message was not delivered


async def test_only_429s_say_nothing_was_delivered(telegram: FakeTelegram) -> None:
    telegram.fail_next(429, 10, retry_after=1)
    async with _client(telegram.url, FakeTime()) as client:
        with pytest.raises(TelegramUnavailable) as error:
            await client.send_message("1", "x")
    assert not error.value.may_have_delivered


async def test_a_4xx_is_final_and_names_telegram_s_reason(telegram: FakeTelegram) -> None:
    async with _client(telegram.url, FakeTime()) as client:
        with pytest.raises(TelegramRefused) as error:
            await client.send_message("1", "unclosed <b>tag")
    assert error.value.status == 400 and "can't parse entities" in str(error.value)
    assert client.attempts == 1


async def test_network_errors_never_show_the_token(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with caplog.at_level(logging.WARNING):
        async with _client(f"http://127.0.0.1:{port}", FakeTime(), max_attempts=2) as client:
            with pytest.raises(TelegramUnavailable) as error:
                await client.send_message("1", "x")
    assert "network error" in str(error.value)
    assert not error.value.may_have_delivered  # no connection was ever made
    assert TOKEN not in str(error.value) and TOKEN not in caplog.text
    assert "SECRET" not in str(error.value) + caplog.text


async def test_a_wrong_token_is_refused_without_echoing_it(telegram: FakeTelegram) -> None:
    settings = AlertsConfig()
    async with TelegramClient(telegram.url, SecretStr("1:WRONG"), settings) as client:
        with pytest.raises(TelegramRefused) as error:
            await client.send_message("1", "x")
    assert error.value.status == 401 and "WRONG" not in str(error.value)
