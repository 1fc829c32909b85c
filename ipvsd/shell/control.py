"""The control socket: JSON lines over a Unix socket, for `ipvsd status`, `drain`, `undrain`, `reload`, `events`.

Protocol: the client sends one JSON object per line, `{"cmd": NAME, ...arguments}`; the daemon answers each with
one line, `{"ok": true, ...}` or `{"ok": false, "error": TEXT}`. `events` answers `{"ok": true}` and then streams
one event per line until the client hangs up. The socket is mode 0600 and the daemon also checks the peer's
credentials (SO_PEERCRED): only root and the daemon's own user may talk to it, whatever the file mode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from ipvsd.errors import IpvsdError
from ipvsd.shell.event_log import Subscription, line

log = logging.getLogger("ipvsd.control")
LIMIT = 64 * 1024 * 1024  # a status answer for a large table is one line
SOCKET_NAME = "control.sock"
DEFAULT_SOCKET = "/run/ipvsd/control.sock"
DEFAULT_STATE_SOCKET = f"/var/lib/ipvsd/{SOCKET_NAME}"

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(IpvsdError):
    """The daemon refused a request, or could not be reached."""


def socket_path(*, socket: str | None = None, state_dir: str | None = None, configured: str | None = None) -> str:
    """Where the socket is: `--socket`, else `--state-dir`/control.sock, else the config's control_socket."""
    if socket:
        return socket
    if state_dir:
        return str(Path(state_dir) / SOCKET_NAME)
    return configured or DEFAULT_SOCKET


def peer_uid(sock: socket.socket) -> int:
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return int(uid)


class ControlServer:
    """Listens on `path`; `commands` maps a request's `cmd` to its handler, `subscribe` feeds `events`."""

    def __init__(self, path: str, commands: dict[str, Handler], subscribe: Callable[[], Subscription]) -> None:
        self.path = path
        self.commands = commands
        self.subscribe = subscribe
        self.allowed = {0, os.getuid()}
        self._server: asyncio.Server | None = None
        self._ino: int | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        await _clear_stale(path)
        # Bind under a temporary name, restrict it, then rename: the final path never exists with a wider mode.
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(tmp))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            sock.listen(64)
        except OSError:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise
        self._ino = path.stat().st_ino
        self._server = await asyncio.start_unix_server(self._client, sock=sock, limit=LIMIT)

    async def ensure(self) -> bool:
        """Listen at `path` again when the socket there is no longer ours (its file or its whole directory was
        removed: tmpfiles cleaning /run, an operator's rm -r); True when it was made again. Raises as `start`
        does (the directory cannot be made, another daemon listens there now); the old socket stays open."""
        if self._server is None:
            return False
        try:
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode) and st.st_ino == self._ino:
                return False
        except OSError:
            pass  # gone, or its directory is
        old = self._server
        await self.start()
        # Stop accepting on the unreachable socket; clients already connected (an events stream) keep theirs.
        old.close()
        return True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            for task in list(self._clients):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(OSError):
            if Path(self.path).stat().st_ino == self._ino:  # never remove a newer daemon's socket
                Path(self.path).unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock)
            if uid not in self.allowed:
                log.warning("control socket: refused a client with uid %d", uid)
                with contextlib.suppress(TimeoutError):  # answer its request, so it reads why rather than EPIPE
                    await asyncio.wait_for(reader.readline(), 2)
                await _send(writer, {"ok": False, "error": "permission denied: only root and the daemon's user "
                                     "may use the control socket"})
                return
            while raw := await reader.readline():
                try:
                    req = json.loads(raw)
                    if not isinstance(req, dict):
                        raise ValueError("a request is a JSON object")
                except ValueError as e:
                    await _send(writer, {"ok": False, "error": f"bad request: {e}"})
                    continue
                except RecursionError:  # json's decoder recurses per level of nesting
                    await _send(writer, {"ok": False, "error": "bad request: nested too deeply"})
                    continue
                cmd = req.get("cmd")
                if cmd == "events":
                    await self._stream(writer)
                    return
                handler = self.commands.get(str(cmd))
                if handler is None:
                    await _send(writer, {"ok": False, "error": f"unknown command {cmd!r}"})
                    continue
                try:
                    answer = await handler(req)
                except (IpvsdError, ValueError) as e:
                    answer = {"ok": False, "error": str(e)}
                except Exception as e:
                    log.exception("control: %s failed", cmd)
                    answer = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
                await _send(writer, {"ok": True, **answer} if "ok" not in answer else answer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            # `close` cancels the clients still connected (an `ipvsd events` at a stop): end as a hang-up does.
            # Python 3.11's stream callback asks a cancelled task for its exception and logs a traceback.
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        sub = self.subscribe()
        try:
            await _send(writer, {"ok": True})
            async for event in sub:
                await _send(writer, event)
        finally:
            sub.close()


async def _send(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    writer.write((line(msg) + "\n").encode())
    await writer.drain()


async def _clear_stale(path: Path) -> None:
    """Remove a socket left by a dead daemon; refuse to take over a live one."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise IpvsdError(f"{path} exists and is not a socket")
    try:
        _, w = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2)
    except (OSError, TimeoutError):
        path.unlink(missing_ok=True)
        return
    w.close()
    raise IpvsdError(f"{path}: another ipvsd is listening there")


# --- the client ----------------------------------------------------------------------------------------------


async def _connect(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(path, limit=LIMIT)
    except FileNotFoundError:
        raise ControlError(f"{path}: no such socket (is `ipvsd run` running? see --socket/--state-dir)") from None
    except PermissionError:
        raise ControlError(f"{path}: permission denied (the control socket is for root and the daemon's user)") \
            from None
    except OSError as e:
        raise ControlError(f"{path}: {e.strerror or e}") from None


async def _answer(reader: asyncio.StreamReader) -> dict[str, Any]:
    try:
        raw = await reader.readline()
    except ConnectionError as e:
        raise ControlError(f"connection to the daemon lost: {e}") from None
    if not raw:
        raise ControlError("the daemon closed the connection")
    msg: dict[str, Any] = json.loads(raw)
    if not msg.get("ok"):
        raise ControlError(str(msg.get("error", "request failed")))
    return msg


async def request(path: str, cmd: str, **args: Any) -> dict[str, Any]:
    """Send one request; return the answer, or raise ControlError with the daemon's error."""
    reader, writer = await _connect(path)
    try:
        with contextlib.suppress(ConnectionError):  # a refusal may already wait to be read
            writer.write((line({"cmd": cmd, **args}) + "\n").encode())
            await writer.drain()
        return await _answer(reader)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


async def events(path: str) -> AsyncIterator[dict[str, Any]]:
    """Yield the daemon's events as they happen."""
    reader, writer = await _connect(path)
    try:
        writer.write(b'{"cmd":"events"}\n')
        await writer.drain()
        await _answer(reader)
        while raw := await reader.readline():
            yield json.loads(raw)
    finally:
        writer.close()


# --- shared by the client commands ---------------------------------------------------------------------------


def add_socket_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", metavar="PATH", help="the daemon's control socket (as given to `ipvsd run`)")
    parser.add_argument("--state-dir", metavar="DIR", help="the daemon's state directory (its socket is "
                        f"DIR/{SOCKET_NAME}, as for `ipvsd run --state-dir`)")
    parser.add_argument("-c", "--config", metavar="FILE", help="read control_socket from this configuration "
                        "(default: /etc/ipvsd/ipvsd.toml, when the socket it names exists)")


def client_path(args: argparse.Namespace) -> str:
    """The socket a client command talks to; with no option, the default path or the default state dir's."""
    configured = None
    if not args.socket and not args.state_dir:
        if args.config:
            from ipvsd import config as configmod

            config, _ = configmod.load(args.config)
            configured = config.settings.control_socket
        else:  # `ipvsd run --state-dir /var/lib/ipvsd` (the unit file) puts it there
            configured = next((p for p in (DEFAULT_SOCKET, DEFAULT_STATE_SOCKET) if os.path.exists(p)),
                              DEFAULT_SOCKET)
    return socket_path(socket=args.socket, state_dir=args.state_dir, configured=configured)


def call(args: argparse.Namespace, cmd: str, **params: Any) -> dict[str, Any] | None:
    """Run one request for a command; print the error and return None when it fails."""
    import sys

    try:
        return asyncio.run(request(client_path(args), cmd, **params))
    except IpvsdError as e:
        print(f"ipvsd {cmd}: {e}", file=sys.stderr)
        return None
