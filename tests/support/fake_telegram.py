"""A local HTTP server that speaks the Telegram Bot API's ``sendMessage`` and ``sendPhoto``.

It checks what Telegram checks and answers in Telegram's shapes: the token in
the path (401 otherwise), a chat id, HTML that Telegram would parse (only its
tags, every ``<``, ``>`` and ``&`` outside them escaped: 400 "can't parse
entities" otherwise), the 4096-character limit after parsing (1024 for a
caption), a PNG in a multipart upload. What it accepted is recorded; it can
be told to answer the next N calls with 429 (``retry_after``) or 500, to
refuse a chat (400 "chat not found") and accept it again, and to call a function (e.g. kill the
client) when the N-th call arrives.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["FakeTelegram", "Received", "parse_telegram_html", "TelegramHtmlError"]

_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a", "span", "tg-spoiler",
         "blockquote", "tg-emoji"}
_TOKEN = re.compile(r"<(/?)([a-zA-Z][a-zA-Z-]*)((?:\s[^<>]*)?)>|&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);|[<>&]")
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class TelegramHtmlError(ValueError):
    pass


def parse_telegram_html(text: str) -> str:
    """The plain text Telegram would show, or :class:`TelegramHtmlError` where Telegram answers 400."""
    plain: list[str] = []
    open_tags: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        plain.append(text[position : match.start()])
        position = match.end()
        closing, tag, _, entity = match.group(1), match.group(2), match.group(3), match.group(4)
        if tag is not None:
            tag = tag.lower()
            if tag not in _TAGS:
                raise TelegramHtmlError(f"Unsupported start tag \"{tag}\" at byte offset {match.start()}")
            if closing:
                if not open_tags or open_tags[-1] != tag:
                    raise TelegramHtmlError(f"Unexpected end tag \"{tag}\" at byte offset {match.start()}")
                open_tags.pop()
            else:
                open_tags.append(tag)
        elif entity is not None:
            if entity.startswith("#x"):
                plain.append(chr(int(entity[2:], 16)))
            elif entity.startswith("#"):
                plain.append(chr(int(entity[1:])))
            else:
                plain.append(_ENTITIES[entity])
        else:
            raise TelegramHtmlError(f"Can't find end of the entity starting at byte offset {match.start()}"
                                    if match.group() == "&" else f"Unexpected \"{match.group()}\" at {match.start()}")
    if open_tags:
        raise TelegramHtmlError(f"Can't find end tag corresponding to start tag \"{open_tags[-1]}\"")
    plain.append(text[position:])
    return "".join(plain)


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Received:
    """One call the fake accepted."""

    method: str
    chat_id: str
    message_id: int
    text: str  # the raw HTML (text, or caption of a photo)
    plain: str  # what a reader sees
    parse_mode: str | None
    reply_to: int | None
    photo: bytes | None
    at: float  # time.monotonic() of the answer


class FakeTelegram:
    """``with FakeTelegram("123:ABC") as telegram: ... telegram.url ...``"""

    def __init__(self, token: str) -> None:
        self.token = token
        self.url = ""
        self.received: list[Received] = []
        self.attempts = 0  # every call, answered or not
        self.refusals: list[tuple[float, int, str]] = []  # (time.monotonic(), status, description) of non-200 answers
        self._failures: list[tuple[int, int | None]] = []
        self._trigger: tuple[int, Callable[[], None]] | None = None
        self._unknown_chats: set[str] = set()
        self._accepted_calls = 0
        self._next_id: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------ control

    def fail_next(self, status: int, count: int, retry_after: int | None = None) -> None:
        """Answer the next ``count`` calls with ``status`` (429 carries ``retry_after``)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def unknown_chat(self, chat_id: str) -> None:
        """Answer every call to ``chat_id`` as Telegram does for a chat the bot cannot reach (400)."""
        with self._lock:
            self._unknown_chats.add(chat_id)

    def reachable(self, chat_id: str) -> None:
        """Undo :meth:`unknown_chat`: calls to ``chat_id`` are accepted again."""
        with self._lock:
            self._unknown_chats.discard(chat_id)

    def when_call(self, number: int, action: Callable[[], None]) -> None:
        """Run ``action`` when call ``number`` (1-based, among calls that would be accepted) arrives;
        that call is answered 500 and not recorded (its sender is expected to be gone)."""
        with self._lock:
            self._trigger = (self._accepted_calls + number, action)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    # ------------------------------------------------------------ server

    def start(self) -> FakeTelegram:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the Bot API

    @staticmethod
    def _answer(status: int, description: str, **extra: Any) -> web.Response:
        return web.json_response({"ok": False, "error_code": status, "description": description, **extra},
                                 status=status)

    async def _fields(self, request: web.Request) -> tuple[dict[str, Any], bytes | None]:
        if request.content_type == "application/json":
            return await request.json(), None
        fields: dict[str, Any] = {}
        photo = None
        reader = await request.multipart() if request.content_type.startswith("multipart/") else None
        if reader is None:
            return dict(await request.post()), None
        async for part in reader:
            if part.name == "photo":
                photo = bytes(await part.read())
            else:
                fields[part.name] = await part.text()
        return fields, photo

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        with self._lock:
            self.attempts += 1
        if request.match_info["token"] != self.token:
            return self._refuse(401, "Unauthorized")
        if method not in ("sendMessage", "sendPhoto"):
            return self._refuse(404, "Not Found: method not found")
        fields, photo = await self._fields(request)
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            status, retry_after = failure
            if status == 429:
                return self._refuse(429, f"Too Many Requests: retry after {retry_after}",
                                    parameters={"retry_after": retry_after})
            return self._refuse(status, "Internal Server Error")
        chat_id = str(fields.get("chat_id", ""))
        if not chat_id:
            return self._refuse(400, "Bad Request: chat_id is empty")
        if chat_id in self._unknown_chats:
            return self._refuse(400, "Bad Request: chat not found")
        text = str(fields.get("text" if method == "sendMessage" else "caption", ""))
        parse_mode = fields.get("parse_mode")
        try:
            plain = parse_telegram_html(text) if parse_mode == "HTML" else text
        except TelegramHtmlError as exc:
            return self._refuse(400, f"Bad Request: can't parse entities: {exc}")
        limit = 4096 if method == "sendMessage" else 1024
        if method == "sendMessage" and not plain.strip():
            return self._refuse(400, "Bad Request: message text is empty")
        if _utf16_length(plain) > limit:
            return self._refuse(400, "Bad Request: message is too long" if method == "sendMessage"
                                else "Bad Request: message caption is too long")
        if method == "sendPhoto" and (photo is None or not photo.startswith(b"\x89PNG")):
            return self._refuse(400, "Bad Request: there is no photo in the request")
        reply = fields.get("reply_parameters") or {}
        reply_to = reply.get("message_id") if isinstance(reply, dict) else None
        reply_to = reply_to if reply_to is not None else fields.get("reply_to_message_id")
        return self._accept(method, chat_id, text, plain, parse_mode, reply_to, photo)

    def _refuse(self, status: int, description: str, **extra: Any) -> web.Response:
        with self._lock:
            self.refusals.append((time.monotonic(), status, description))
        return self._answer(status, description, **extra)

    def _accept(self, method: str, chat_id: str, text: str, plain: str, parse_mode: Any, reply_to: Any,
                photo: bytes | None) -> web.Response:
        with self._lock:
            self._accepted_calls += 1
            trigger = self._trigger
            if trigger is not None and trigger[0] == self._accepted_calls:
                self._trigger = None
                action = trigger[1]
            else:
                action = None
                if reply_to is not None and not any(r.chat_id == chat_id and r.message_id == int(reply_to)
                                                    for r in self.received):
                    self._accepted_calls -= 1
                    self.refusals.append((time.monotonic(), 400, "Bad Request: message to be replied not found"))
                    return self._answer(400, "Bad Request: message to be replied not found")
                message_id = self._next_id.get(chat_id, 0) + 1
                self._next_id[chat_id] = message_id
                self.received.append(Received(method, chat_id, message_id, text, plain,
                                              str(parse_mode) if parse_mode else None,
                                              int(reply_to) if reply_to is not None else None, photo,
                                              time.monotonic()))
        if action is not None:
            action()
            return self._answer(500, "Internal Server Error")
        result: dict[str, Any] = {"message_id": message_id, "chat": {"id": chat_id}, "date": 0}
        result["text" if method == "sendMessage" else "caption"] = plain
        return web.json_response({"ok": True, "result": result})
