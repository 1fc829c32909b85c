"""Real servers that turn hostile: one process, one port per behaviour, each port's mode read from a JSON file.

    python -m scripts.reliability_lab.hostile_server MODES.json PORT...

Every port starts as a well-behaved HTTP server (mode "ok": the page with the receive string), so the health
checks first see it up; the suite then rewrites MODES.json ({"8001": "slowloris", ...}) and each new connection
gets what its port's mode says. A blackhole is not a mode: it is a DROP rule in the real's namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
from pathlib import Path

PAGE = b"debian11-hostile\n"
GIB = 1 << 30
# What a TLS server answers to a plaintext request: an alert record (fatal, unexpected_message), then close.
TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x0a"


def mode_of(modes: Path, port: int) -> str:
    try:
        return str(json.loads(modes.read_text()).get(str(port), "ok"))
    except (OSError, ValueError):
        return "ok"


async def read_head(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        await reader.readuntil(b"\r\n\r\n")


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mode: str) -> None:
    await read_head(reader)
    if mode == "ok":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(PAGE), PAGE))
    elif mode == "slowloris":  # the status line at once, then one byte of a header every half second, for ever
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while True:
            await writer.drain()
            writer.write(b"X")
            await asyncio.sleep(0.5)
    elif mode == "huge":  # a 1 GiB body whose receive string would only come at its very end
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % GIB)
        chunk, sent = b"x" * 65536, 0
        while sent < GIB - len(PAGE):
            writer.write(chunk[: GIB - len(PAGE) - sent])
            sent += min(len(chunk), GIB - len(PAGE) - sent)
            await writer.drain()
        writer.write(PAGE)
    elif mode == "garbage":
        writer.write(os.urandom(4096))
    elif mode == "tls":
        writer.write(TLS_ALERT)
    elif mode == "silent":  # accept, read, never answer, never close
        await asyncio.Event().wait()
    elif mode == "reset":  # half a header, then a RST (linger 0) instead of a FIN
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


async def main(modes: Path, ports: list[int]) -> None:
    servers = []
    for port in ports:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int = port) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                await serve(r, w, mode_of(modes, port))
        servers.append(await asyncio.start_server(handle, "0.0.0.0", port, backlog=1024, reuse_address=True))
    print("listening", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), [int(p) for p in sys.argv[2:]]))
