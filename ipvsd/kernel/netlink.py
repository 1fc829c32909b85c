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
from collections.abc import Sequence
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket

from ipvsd.errors import IpvsMissing, KernelError
from ipvsd.kernel import _batch, _wire
from ipvsd.kernel import _messages as m
from ipvsd.kernel._batch import Batch
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
    Op,
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
        # An error ack would otherwise carry a copy of the request: acks stay small, so a batch's fit.
        self.sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
        self.max_batch = _batch.MAX_BATCH_OPS
        self._grow_rcvbuf()
        self.family = family
        self._seq = itertools.count(1)

    def _grow_rcvbuf(self) -> None:
        """Make room for a batch's acks; size batches to the receive buffer we got.

        SO_RCVBUFFORCE passes net.core.rmem_max (212992 by default) and needs CAP_NET_ADMIN, which an IPVS
        writer has anyway; without it SO_RCVBUF gives what rmem_max allows, and batches shrink to fit.
        """
        for opt in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, _RCVBUF)
                break
            except OSError:
                continue
        got = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # the kernel's doubled figure
        self.max_batch = max(1, min(_batch.MAX_BATCH_OPS, got // _batch.ACK_BUDGET))

    def seqs(self, n: int) -> list[int]:
        """The next n sequence numbers, one per request."""
        return [next(self._seq) for _ in range(n)]

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

    async def call_many(self, requests: list[bytes], seqs: list[int]) -> tuple[list[int | None], Exception | None]:
        """Send requests (each with NLM_F_ACK and its seq) in one sendmsg; return each one's errno (0: done).

        The kernel handles the requests of one datagram in order and acks each into our receive buffer before
        sendmsg returns; so the acks are read afterwards, one datagram each. A send that fails sends nothing.
        A timeout or a lost ack (ENOBUFS: the buffer overflowed) is returned beside the errnos known so far
        (None: not acked), since the requests before it were carried out.
        """
        self.sock.send(b"".join(requests))
        want = {seq: i for i, seq in enumerate(seqs)}
        out: list[int | None] = [None] * len(seqs)
        left = len(seqs)
        recv = self.sock.recv
        try:
            while left:
                try:  # the acks are queued already: read them without a trip through the event loop
                    data = recv(_RECV)
                except BlockingIOError:
                    data = await self._recv()
                for seq, err in _wire.acks(data):
                    i = want.get(seq)
                    if i is not None and out[i] is None:
                        out[i] = err
                        left -= 1
        except (OSError, TimeoutError) as e:
            # An overflow is reported before the acks still queued: those say how far the batch is known.
            while isinstance(e, OSError) and e.errno == errno.ENOBUFS:
                try:
                    data = self.sock.recv(_RECV)
                except OSError:
                    break
                for seq, err in _wire.acks(data):
                    i = want.get(seq)
                    if i is not None and out[i] is None:
                        out[i] = err
            return out, e
        return out, None

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
_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_RCVBUF = 1 << 20  # the kernel doubles it: 2 MiB, room for MAX_BATCH_OPS acks at ACK_BUDGET each
_REPLY_TIMEOUT = 10.0


def _settled(op: Op, err: int, done: frozenset[int]) -> KernelError | None:
    """The errno policy's verdict on a refused op: None when it counts as done, else the error."""
    try:
        settle(str(op), err, done)
    except KernelError as e:
        return e
    return None


# Each table op's command, and the errnos that count as done (the policy of _policy).
_COMMANDS: dict[type, tuple[int, frozenset[int]]] = {
    AddService: (m.CMD_NEW_SERVICE, DONE_ON_ADD),
    EditService: (m.CMD_SET_SERVICE, STRICT),
    DelService: (m.CMD_DEL_SERVICE, DONE_ON_DELETE),
    AddDest: (m.CMD_NEW_DEST, DONE_ON_ADD),
    EditDest: (m.CMD_SET_DEST, STRICT),
    DelDest: (m.CMD_DEL_DEST, DONE_ON_DELETE),
}


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
            plain = await self._plain_socket_locked()
            try:
                if read:
                    return await plain.read(cmd, attrs, dump=dump, af=af)
                return [], await plain.call(cmd, attrs)
            except (OSError, TimeoutError) as e:
                self._drop_plain()
                raise KernelError(op, getattr(e, "errno", None) or errno.ETIMEDOUT) from None

    async def _plain_socket(self) -> _Plain:
        async with self._lock:
            return await self._plain_socket_locked()

    async def _plain_socket_locked(self) -> _Plain:
        if self._plain is None:
            self._plain = _Plain(self._netns, (await self._socket()).prid)
        return self._plain

    def _drop_plain(self) -> None:
        """Close the request socket after a failure on it: stray replies must not answer the next request."""
        if self._plain is not None:
            self._plain.close()
            self._plain = None

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
        return tuple(_wire.dest(r, key.af) for r in replies)

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
        await self._one(AddService(key, attrs))

    async def edit_service(self, key: ServiceKey, attrs: ServiceAttrs) -> None:
        await self._one(EditService(key, attrs))

    async def del_service(self, key: ServiceKey) -> None:
        await self._one(DelService(key))

    async def add_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> None:
        await self._one(AddDest(service, key, attrs))

    async def edit_dest(self, service: ServiceKey, key: DestKey, attrs: DestAttrs) -> None:
        await self._one(EditDest(service, key, attrs))

    async def del_dest(self, service: ServiceKey, key: DestKey) -> None:
        await self._one(DelDest(service, key))

    async def _one(self, op: Op) -> None:
        """One table op: a batch of one, so a table op has one encoding and one errno policy whichever way it
        goes."""
        batch = await self.apply_many([op])
        if batch.error is not None:
            raise batch.error

    async def apply_many(self, ops: Sequence[Op], cuts: Sequence[int] = ()) -> Batch:
        """Carry out table ops in order, many requests per sendmsg (see ipvsd.kernel._batch)."""
        outcomes: list[KernelError | None] = []
        sends = 0
        try:
            plain = await self._plain_socket()
        except KernelError as e:  # no IPVS, or its family cannot be opened: the first op fails with it
            return _batch.results(ops, [e], sends)
        # Encoded once, with placeholder seqs (each batch's are patched in); an op's notation only on failure.
        encode = _wire.Requests(plain.family)
        commands = [_COMMANDS[type(op)] for op in ops]
        wire = [encode(op, cmd, flags=NLM_F_REQUEST | NLM_F_ACK, seq=0) for op, (cmd, _) in zip(ops, commands,
                                                                                               strict=True)]
        for part in _batch.chunks([len(w) for w in wire], cuts, max_ops=plain.max_batch):
            async with self._lock:
                if self._plain is not plain:  # another call lost the socket meanwhile
                    outcomes.append(KernelError(str(ops[part.start]), errno.EPIPE))
                    break
                seqs = plain.seqs(len(part))
                msgs = [_wire.with_seq(wire[i], seq) for i, seq in zip(part, seqs, strict=True)]
                try:
                    errs, lost = await plain.call_many(msgs, seqs)
                except OSError as e:  # the send itself failed: nothing of this batch was carried out
                    self._drop_plain()
                    outcomes.append(KernelError(str(ops[part.start]), e.errno or errno.EIO))
                    break
                sends += 1
                if lost is not None:  # acks may still arrive: they must not answer the next request
                    self._drop_plain()
            failed = False
            for i, err in zip(part, errs, strict=True):
                if err is None:  # never acked: its fate, and that of every op after it, is unknown
                    outcomes.append(KernelError(str(ops[i]), getattr(lost, "errno", None) or errno.ETIMEDOUT))
                    return _batch.results(ops, outcomes, sends)
                verdict = _settled(ops[i], err, commands[i][1]) if err else None
                outcomes.append(verdict)
                failed = failed or verdict is not None
            if failed:
                break
        return _batch.results(ops, outcomes, sends)

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
        try:
            await self._do(f"--stop-daemon {_DAEMON_NAMES.get(state, state)}", m.CMD_DEL_DAEMON,
                           [("IPVS_CMD_ATTR_DAEMON", {"attrs": [("IPVS_DAEMON_ATTR_STATE", state)]})],
                           DONE_ON_DELETE)
        except KernelError as e:
            # A sync thread stopped before it first ran makes kthread_stop return EINTR, and netlink_rcv_skb
            # sends no ack at all for EINTR: the wait times out though the daemon is gone. The table says.
            if e.errno != errno.ETIMEDOUT or any(d.state == state for d in await self.daemons()):
                raise

    async def close(self) -> None:
        if self._plain is not None:
            self._plain.close()
            self._plain = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
