"""A TCP proxy in front of the real Redis that can lose a reply: the command reaches Redis and runs,
then the connection breaks before its answer gets back, which is when redis-py sends it again."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["ReplyDroppingProxy"]


class ReplyDroppingProxy:
    """Forwards ``127.0.0.1:port`` to Redis; after :meth:`drop_next_reply` the next reply is thrown
    away and that connection closed."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.base_events.Server | None = None
        self._drop = 0
        self.dropped = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def drop_next_reply(self, count: int = 1) -> None:
        self._drop += count

    async def __aenter__(self) -> ReplyDroppingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self._target)

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                server_writer.write(data)
                await server_writer.drain()

        async def downstream() -> None:
            while data := await server_reader.read(65536):
                if self._drop:
                    self._drop -= 1
                    self.dropped += 1
                    return  # the reply is lost: close both sides
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_writer, server_writer):
            with contextlib.suppress(ConnectionError):
                writer.close()
