"""Telegram's text rules: HTML escaping, lengths as Telegram counts them, clean splits.

The alerts use ``parse_mode=HTML``: only ``<``, ``>`` and ``&`` are special,
so symbols, versions and numbers (``_ * . - [ ] ( ) ~ ` # + = | { } !``) pass
untouched, where MarkdownV2 would need a backslash before each of 18
characters and fails the whole message on one miss.

Telegram limits a message to 4096 characters *after* entity parsing, counted
in UTF-16 code units. :func:`telegram_length` counts the raw HTML, which is
never shorter than the parsed text, so a chunk that fits by this count fits
for Telegram. Every line the formatters write closes the tags it opens, so a
split at a line end never cuts a tag in two.
"""

from __future__ import annotations

import re

__all__ = ["escape_html", "telegram_length", "split_message", "plain_text", "TELEGRAM_MAX_CHARS"]

TELEGRAM_MAX_CHARS = 4096

_TAG_OR_ENTITY = re.compile(r"<[^>]*>|&[#A-Za-z0-9]+;")


def escape_html(text: str) -> str:
    """Text made safe inside Telegram HTML: ``&``, ``<`` and ``>`` become entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def telegram_length(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's limits (an emoji counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def plain_text(html: str) -> str:
    """What a reader sees: tags dropped and the three entities turned back (for tests and logs)."""
    without_tags = re.sub(r"<[^>]*>", "", html)
    return without_tags.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _tokens(line: str) -> list[str]:
    """Characters, except that a tag or an entity is one indivisible token."""
    tokens: list[str] = []
    position = 0
    for match in _TAG_OR_ENTITY.finditer(line):
        tokens.extend(line[position : match.start()])
        tokens.append(match.group())
        position = match.end()
    tokens.extend(line[position:])
    return tokens


def _cut_long_line(line: str, limit: int) -> list[str]:
    """A line over the limit, cut between tokens, after the last space of a piece when it has one."""
    pieces: list[str] = []
    piece: list[str] = []
    length = 0
    for token in _tokens(line):
        size = telegram_length(token)
        if piece and length + size > limit:
            spaces = [i for i, t in enumerate(piece) if t == " "]
            cut = spaces[-1] + 1 if spaces and spaces[-1] > 0 else len(piece)
            pieces.append("".join(piece[:cut]))
            piece = piece[cut:]
            length = sum(telegram_length(t) for t in piece)
            if piece and length + size > limit:  # the words after the space still do not leave room
                pieces.append("".join(piece))
                piece, length = [], 0
        piece.append(token)
        length += size
    pieces.append("".join(piece))
    return pieces


def split_message(text: str, limit: int = TELEGRAM_MAX_CHARS) -> list[str]:
    """``text`` in chunks of at most ``limit`` UTF-16 units, cut at line ends.

    Lines are kept whole and in order; the newline between two chunks is the
    one dropped. Only a single line longer than ``limit`` is cut inside, after
    a space where possible and never inside a tag or an entity (a lone tag
    longer than ``limit`` is the one thing that can exceed it). Joining the
    chunks with ``"\\n"`` gives back ``text`` when no line was cut.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    chunks: list[str] = []
    current: list[str] = []
    current_length = 0
    for line in text.split("\n"):
        for piece in _cut_long_line(line, limit) if telegram_length(line) > limit else [line]:
            piece_length = telegram_length(piece)
            added = piece_length + (1 if current else 0)
            if current and current_length + added > limit:
                chunks.append("\n".join(current))
                current, current_length = [], 0
                added = piece_length
            current.append(piece)
            current_length += added
    if current:
        chunks.append("\n".join(current))
    return chunks
