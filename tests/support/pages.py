"""Loopback HTTP pages for reals, and waiting on a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Pages:
    """A loopback HTTP server per real; `body[port]` is what it serves (HTTP/1.0, one request per connection)."""

    body: dict[int, str] = field(default_factory=dict)
    servers: list[asyncio.Server] = field(default_factory=list)

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            port = writer.get_extra_info("sockname")[1]
            await reader.readuntil(b"\r\n\r\n")
            data = self.body[port].encode()
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.body[port] = "debian11-ok"
        self.servers.append(server)
        return int(port)

    def close(self) -> None:
        for s in self.servers:
            s.close()


async def until(cond: Callable[[], Awaitable[bool]], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
