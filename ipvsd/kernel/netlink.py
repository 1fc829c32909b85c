"""The kernel adapter: the Kernel protocol over IPVS generic netlink.

pyroute2's asyncio socket resolves the IPVS family (and loads ip_vs when it is missing). Every request after
that (changes, GETs, dumps) goes out on a second, plain netlink socket, encoded and decoded by `_wire`,
because pyroute2's generic codec costs ~20 × the kernel's own work per message. No thread is involved. A lock
keeps all requests in call order, which is the order a plan was made in. This is the only module of ipvsd
that talks to pyroute2's socket layer.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import itertools
import os
import socket
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket

from ipvsd.errors import IpvsMissing, KernelError
from ipvsd.kernel import _messages as m
from ipvsd.kernel import _wire
from ipvsd.kernel._policy import DONE_ON_ADD, DONE_ON_DELETE, STRICT, settle
from ipvsd.model import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    Dest,
    DestAttrs,
    DestKey,
    EditDest,
    EditService,
    Info,
    Service,
    ServiceAttrs,
    ServiceKey,
    SyncDaemon,
    Timeouts,
)

_CLONE_NEWNET = 0x40000000
_NETLINK_GENERIC = 16
_DAEMON_NAMES = {1: "master", 2: "backup"}


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def netlink_socket(netns: str | None) -> socket.socket:
    """A generic netlink socket, opened inside the named network namespace when one is given.

    A socket stays bound to the namespace it was created in, so only the creating thread visits the namespace
    and comes straight back; the rest of the process never leaves its own.
    """
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_GENERIC)
    path = netns if "/" in netns else f"/run/netns/{netns}"
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_GENERIC)
        finally:
            _setns(home)
    finally:
        os.close(home)


async def _modprobe(module: str) -> bool:
    """Load a kernel module; True when modprobe succeeded."""
    try:
        proc = await asyncio.create_subprocess_exec("modprobe", "-q", module, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return False
    return await proc.wait() == 0


class _Plain:
    """A plain netlink socket that speaks IPVS through _wire: requests, acks, GETs and dumps.

    The kernel answers an IPVS request inside the send (a dump one datagram per read), so a reply is normally
    waiting when we read; the loop is only awaited when it is not.
    """

    def __init__(self, netns: str | None, family: int) -> None:
        self.sock = netlink_socket(netns)
        self.sock.bind((0, 0))
        self.sock.setblocking(False)
        self.family = family
        self._seq = itertools.count(1)

    async def _recv(self) -> bytes:
        try:
            return self.sock.recv(_RECV)
        except BlockingIOError:
            async with asyncio.timeout(_REPLY_TIMEOUT):
                return await asyncio.get_running_loop().sock_recv(self.sock, _RECV)

    async def call(self, cmd: int, attrs: m.Attrs) -> int:
        """Send one change; return the kernel's errno for it (0: done)."""
        seq = next(self._seq)
        self.sock.send(_wire.request(self.family, cmd, attrs, flags=NLM_F_REQUEST | NLM_F_ACK, seq=seq))
        while True:
            err = _wire.ack_error(await self._recv(), seq)
            if err is not None:
                return err

    async def read(self, cmd: int, attrs: m.Attrs, *, dump: bool, af: int = 0) -> tuple[list[_wire.Message], int]:
        """Send a GET (one reply) or a dump (replies until DONE); return the replies and the errno (0: fine)."""
        seq = next(self._seq)
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        self.sock.send(_wire.request(self.family, cmd, attrs, flags=flags, seq=seq))
        out: list[_wire.Message] = []
        while True:
            got, err, done = _wire.replies(await self._recv(), seq, af=af)
            out += got
            if err:
                return out, err
            if done or (out and not dump):
                return out, 0

    def close(self) -> None:
        self.sock.close()


_RECV = 65536  # the kernel fills a dump datagram up to 32 KiB
_REPLY_TIMEOUT = 10.0


class NetlinkKernel:
    """The IPVS table of a network namespace (ours by default), reached through generic netlink."""

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns
        self._sock: Any = None
        self._plain: _Plain | None = None
        self._lock = asyncio.Lock()

    async def _socket(self) -> Any:
        if self._sock is None:
            for attempt in (1, 2):
                sock = AsyncGenericNetlinkSocket(use_socket=netlink_socket(self._netns))
                try:
                    await sock.bind(m.GENL_NAME, m.IpvsMessage)
                    break
                except NetlinkError as e:
                    sock.close()
                    # ENOENT from the genl controller: ip_vs is not loaded. Load it once, as ipvsadm does.
                    if e.code != errno.ENOENT:
                        raise KernelError("(open the IPVS netlink family)", e.code) from None
                    if attempt == 2 or not await _modprobe("ip_vs"):
                        raise IpvsMissing(e.code) from None
            self._sock = sock
        return self._sock

    async def _request(self, op: str, cmd: int, attrs: m.Attrs, *, read: bool, dump: bool = False,
                       af: int = 0) -> tuple[list[_wire.Message], int]:
        async with self._lock:
            if self._plain is None:
                self._plain = _Plain(self._netns, (await self._socket()).prid)
            try:
                if read:
                    return await self._plain.read(cmd, attrs, dump=dump, af=af)
                return [], await self._plain.call(cmd, attrs)
            except (OSError, TimeoutError) as e:
                self._plain.close()
                self._plain = None
                raise KernelError(op, getattr(e, "errno", None) or errno.ETIMEDOUT) from None

    async def _do(self, op: str, cmd: int, attrs: m.Attrs, done: frozenset[int] = STRICT) -> None:
        _, err = await self._request(op, cmd, attrs, read=False)
        if err:
            settle(op, err, done)

    async def _get(self, op: str, cmd: int, attrs: m.Attrs, done: frozenset[int] = STRICT) -> list[Any]:
        # A doit GET answers with its reply alone; asking for an ACK too would leave a stray message behind.
        replies, err = await self._request(op, cmd, attrs, read=True)
        if err:
            settle(op, err, done)
            return []
        return replies

    async def _dump(self, op: str, cmd: int, attrs: m.Attrs, af: int = 0) -> list[Any]:
        replies, err = await self._request(op, cmd, attrs, read=True, dump=True, af=af)
        if err:
            settle(op, err, STRICT)
        return replies

    # --- reading ---------------------------------------------------------------------------------

    async def info(self) -> Info:
        (reply,) = await self._get("--version", m.CMD_GET_INFO, [])
        return m.decode_info(reply.raw)

    async def _dests(self, key: ServiceKey) -> tuple[Dest, ...]:
        replies = await self._dump(f"-L {key}", m.CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(key))],
                                   af=key.af)
        return tuple(m.decode_dest(r, key.af) for r in replies)

    async def services(self) -> list[Service]:
        found = [m.decode_service(r) for r in await self._dump("-L", m.CMD_GET_SERVICE, [])]
        return [Service(s.key, s.attrs, await self._dests(s.key), s.stats) for s in found]

    async def service(self, key: ServiceKey) -> Service | None:
        replies = await self._get(f"-L {key}", m.CMD_GET_SERVICE, [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(key))],
                                  done=frozenset({errno.ESRCH, errno.ENOENT}))
        if not replies:
            return None
        s = m.decode_service(replies[0])
        return Service(s.key, s.attrs, await self._dests(s.key), s.stats)

    async def timeouts(self) -> Timeouts:
        (reply,) = await self._get("-L --timeout", m.CMD_GET_CONFIG, [])
        return m.decode_timeouts(reply)

    async def daemons(self) -> list[SyncDaemon]:
        return [m.decode_daemon(r) for r in await self._dump("-L --daemon", m.CMD_GET_DAEMON, [])]

    # --- services and dests ----------------------------------------------------------------------

    async def add_service(self, key: ServiceKey, attrs: ServiceAttrs) -> None:
        await self._do(str(AddService(key, attrs)), m.CMD_NEW_SERVICE,
                       [("IPVS_CMD_ATTR_SERVICE", m.service_nest(key, attrs))], DONE_ON_ADD)

    async def edit_service(self, key: ServiceKey, attrs: ServiceAttrs) -> None:
        await self._do(str(EditService(key, attrs)), m.CMD_SET_SERVICE,
                       [("IPVS_CMD_ATTR_SERVICE", m.service_nest(key, attrs))])

    async def del_service(self, key: ServiceKey) -> None:
        await self._do(str(DelService(key)), m.CMD_DEL_SERVICE,
                       [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(key))], DONE_ON_DELETE)

    async def add_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> None:
        await self._do(str(AddDest(service, key, attrs)), m.CMD_NEW_DEST,
                       [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(service)),
                        ("IPVS_CMD_ATTR_DEST", m.dest_nest(key, attrs))], DONE_ON_ADD)

    async def edit_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> None:
        await self._do(str(EditDest(service, key, attrs)), m.CMD_SET_DEST,
                       [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(service)),
                        ("IPVS_CMD_ATTR_DEST", m.dest_nest(key, attrs))])

    async def del_dest(self, service: ServiceKey, key: DestKey) -> None:
        await self._do(str(DelDest(service, key)), m.CMD_DEL_DEST,
                       [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(service)),
                        ("IPVS_CMD_ATTR_DEST", m.dest_key_nest(key))], DONE_ON_DELETE)

    async def zero(self, key: ServiceKey | None = None) -> None:
        if key is None:
            await self._do("-Z", m.CMD_ZERO, [])
        else:
            await self._do(f"-Z {key}", m.CMD_ZERO, [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(key))])

    async def flush(self) -> None:
        await self._do("-C", m.CMD_FLUSH, [])

    # --- global settings -------------------------------------------------------------------------

    async def set_timeouts(self, t: Timeouts) -> None:
        await self._do(f"--set {t.tcp} {t.tcp_fin} {t.udp}", m.CMD_SET_CONFIG, m.timeout_attrs(t))

    async def start_daemon(self, d: SyncDaemon) -> None:
        op = f"--start-daemon {_DAEMON_NAMES.get(d.state, d.state)} --mcast-interface {d.mcast_ifn} --syncid {d.syncid}"
        await self._do(op, m.CMD_NEW_DAEMON, [("IPVS_CMD_ATTR_DAEMON", m.daemon_nest(d))], DONE_ON_ADD)

    async def stop_daemon(self, state: int) -> None:
        await self._do(f"--stop-daemon {_DAEMON_NAMES.get(state, state)}", m.CMD_DEL_DAEMON,
                       [("IPVS_CMD_ATTR_DAEMON", {"attrs": [("IPVS_DAEMON_ATTR_STATE", state)]})], DONE_ON_DELETE)

    async def close(self) -> None:
        if self._plain is not None:
            self._plain.close()
            self._plain = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
