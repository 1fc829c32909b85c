"""IPVS requests to bytes with `struct`, from the same attribute lists and tables as the pyroute2 messages.

Why: pyroute2 spends ~300 µs of CPU encoding one NEW_DEST message (its generic nla machinery), about 20 ×
the kernel's own work, and in the emulated lab ~10 ms: programming 10,000 reals took minutes. The layout
here is read off `_messages`' `nla_map` tables, so there is one declaration of the IPVS attributes, and
tests/unit/test_wire.py checks byte for byte that this encoder and pyroute2 agree on every request shape.
Replies are decoded here too, lazily, into objects with pyroute2's `get_attr()` so that `_messages`' decoders
serve both (tests/unit/test_messages.py runs its kernel-shaped replies through both).
"""

from __future__ import annotations

import operator
import socket
import struct
from typing import Any, ClassVar

from ipvsd.kernel import _messages as m
from ipvsd.model import (
    AF_INET,
    AddDest,
    AddService,
    DelDest,
    DelService,
    Dest,
    DestAttrs,
    DestKey,
    EditDest,
    EditService,
    Op,
    ServiceKey,
    Stats,
)

NLMSG_ERROR = 2
_NLMSGHDR = struct.Struct("=IHHII")
_GENLHDR = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
_ERR = struct.Struct("=i")

_SCALARS = {
    "uint8": struct.Struct("=B"),
    "uint16": struct.Struct("=H"),
    "uint32": struct.Struct("=I"),
    "uint64": struct.Struct("=Q"),
    "be16": struct.Struct(">H"),
    "be32": struct.Struct(">I"),
}
_FLAGS = struct.Struct("=II")

class Table:
    """One nest's attributes, by name and by number: (number, kind, the nested table or None)."""

    def __init__(self, cls: Any) -> None:
        self.names: dict[str, tuple[int, str, Table | None]] = {}
        self.numbers: dict[int, str] = {}
        for number, (name, kind) in enumerate(cls.nla_map):
            nested = getattr(cls, kind, None)
            sub = Table(nested) if isinstance(nested, type) and kind in _NESTS else None
            self.names[name] = (number, kind, sub)
            self.numbers[number] = name


_NESTS = frozenset({"service", "dest", "daemon", "stats", "stats64"})
TOP = Table(m.IpvsMessage)


def _pad(n: int) -> int:
    return (n + 3) & ~3


def _payload(kind: str, value: Any, af: int) -> bytes:
    scalar = _SCALARS.get(kind)
    if scalar is not None:
        return scalar.pack(value)
    if kind == "asciiz":
        return str(value).encode() + b"\0"
    if kind.startswith("target("):  # an address whose family is the nest's AF attribute
        return socket.inet_pton(socket.AF_INET6 if ":" in value else socket.AF_INET, value)
    if kind == "netmask":  # an IPv4 mask in network order, an IPv6 prefix length in host order
        return _SCALARS["be32" if af == AF_INET else "uint32"].pack(value)
    if kind == "flags":
        return _FLAGS.pack(value["flags"], value["mask"])
    if kind == "ip4addr":
        return socket.inet_pton(socket.AF_INET, value)
    if kind == "ip6addr":
        return socket.inet_pton(socket.AF_INET6, value)
    raise ValueError(f"no wire encoding for attribute kind {kind!r}")


def attributes(table: Table, attrs: m.Attrs) -> bytes:
    """Encode a list of (name, value) attributes of one nest; nested values are {"attrs": [...]}."""
    out = bytearray()
    af = 0
    for name, value in attrs:
        number, kind, nested = table.names[name]
        if nested is not None:
            payload = attributes(nested, value["attrs"])
        else:
            payload = _payload(kind, value, af)
            if name.endswith("_AF") or name.endswith("_ADDR_FAMILY"):
                af = value
        out += _NLA.pack(4 + len(payload), number)
        out += payload
        out += bytes(_pad(len(payload)) - len(payload))
    return bytes(out)


def request(family: int, cmd: int, attrs: m.Attrs, *, flags: int, seq: int) -> bytes:
    """A whole netlink message: header, generic-netlink header (IPVS version 1) and attributes."""
    body = _GENLHDR.pack(cmd, m.GENL_VERSION, 0) + attributes(TOP, attrs)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), family, flags, seq, 0) + body


def _nla(number: int, payload: bytes) -> bytes:
    return _NLA.pack(4 + len(payload), number) + payload + bytes(_pad(len(payload)) - len(payload))


class Requests:
    """Table ops to request bytes, equal to what `request` makes of their attribute lists (tests/unit/test_wire.py
    checks it), reusing what repeats across a big plan: a service's SERVICE attribute (the same in each of its
    dests' requests) and a dest's settings (often one set for every dest).

    Why: encoding an attribute list is most of the CPU a batched request costs ipvsd, and in the lab's emulated
    CPU that is most of the time a big table takes to program.
    """

    _SERVICE = TOP.names["IPVS_CMD_ATTR_SERVICE"][0]
    _DEST, _, _DEST_TABLE = TOP.names["IPVS_CMD_ATTR_DEST"]

    def __init__(self, family: int) -> None:
        self.family = family
        self._services: dict[ServiceKey, bytes] = {}
        self._settings: dict[DestAttrs, bytes] = {}

    def _service_key(self, key: ServiceKey) -> bytes:
        out = self._services.get(key)
        if out is None:
            out = self._services[key] = attributes(TOP, [("IPVS_CMD_ATTR_SERVICE", m.service_key_nest(key))])
        return out

    def _dest(self, key: DestKey, attrs: DestAttrs | None) -> bytes:
        assert self._DEST_TABLE is not None
        named = m.dest_key_nest(key)["attrs"]
        inner = attributes(self._DEST_TABLE, named)
        if attrs is not None:
            settings = self._settings.get(attrs)
            if settings is None:  # the settings follow the key in the nest; they hold no address or netmask
                settings = attributes(self._DEST_TABLE, m.dest_nest(key, attrs)["attrs"][len(named):])
                self._settings[attrs] = settings
            inner += settings
        return _nla(self._DEST, inner)

    def __call__(self, op: Op, cmd: int, *, flags: int, seq: int) -> bytes:
        """The request for `op` (command `cmd`)."""
        match op:
            case AddDest(svc, key, attrs) | EditDest(svc, key, attrs):
                attrs_bytes = self._service_key(svc) + self._dest(key, attrs)
            case DelDest(svc, key):
                attrs_bytes = self._service_key(svc) + self._dest(key, None)
            case AddService(key, attrs) | EditService(key, attrs):
                attrs_bytes = attributes(TOP, [("IPVS_CMD_ATTR_SERVICE", m.service_nest(key, attrs))])
            case DelService(key):
                attrs_bytes = self._service_key(key)
        body = _GENLHDR.pack(cmd, m.GENL_VERSION, 0) + attrs_bytes
        return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), self.family, flags, seq, 0) + body


_SEQ = struct.Struct("=I")


def with_seq(msg: bytes, seq: int) -> bytes:
    """The same request with another sequence number (the header's third field, at byte 8)."""
    return msg[:8] + _SEQ.pack(seq) + msg[12:]


def ack_error(data: bytes, seq: int) -> int | None:
    """The errno (0 for success) of the ack for `seq` in a datagram of netlink messages; None if not there."""
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, _, mseq, _ = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size:
            break
        if kind == NLMSG_ERROR and mseq == seq:
            return -int(_ERR.unpack_from(data, pos + _NLMSGHDR.size)[0])
        pos += _pad(length)
    return None


def acks(data: bytes) -> list[tuple[int, int]]:
    """Every ack in a datagram of netlink messages, as (seq, errno; 0 for success)."""
    out = []
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, _, mseq, _ = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size:
            break
        if kind == NLMSG_ERROR:
            out.append((mseq, -int(_ERR.unpack_from(data, pos + _NLMSGHDR.size)[0])))
        pos += _pad(length)
    return out


# --- replies -----------------------------------------------------------------------------------------------

NLMSG_DONE = 3
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER


class Nest:
    """The attributes of one nest, decoded on `get_attr(name)` (None when absent), as pyroute2's nla does."""

    __slots__ = ("af", "payloads", "table")

    def __init__(self, table: Table, data: bytes, start: int, end: int, af: int = 0) -> None:
        self.table = table
        self.payloads: dict[str, bytes] = {}
        pos = start
        while pos + 4 <= end:
            length, number = _NLA.unpack_from(data, pos)
            if length < 4:
                break
            name = table.numbers.get(number & NLA_TYPE_MASK)
            if name is not None:
                self.payloads[name] = data[pos + 4: pos + length]
            pos += _pad(length)
        # Addresses and netmasks follow the nest's own family, which may come after them; else the caller's.
        for name in ("IPVS_SVC_ATTR_AF", "IPVS_DEST_ATTR_ADDR_FAMILY"):
            raw = self.payloads.get(name)
            if raw is not None and len(raw) >= 2:
                af = _SCALARS["uint16"].unpack_from(raw)[0]
        self.af = af

    def get_attr(self, name: str) -> Any:
        raw = self.payloads.get(name)
        if raw is None:
            return None
        _, kind, nested = self.table.names[name]
        if nested is not None:
            return Nest(nested, raw, 0, len(raw), self.af)
        scalar = _SCALARS.get(kind)
        if scalar is not None:
            return scalar.unpack_from(raw)[0]
        if kind == "asciiz":
            return raw.split(b"\0", 1)[0].decode(errors="replace")
        if kind.startswith("target("):
            v6 = self.af != AF_INET and len(raw) >= 16
            return socket.inet_ntop(socket.AF_INET6, raw[:16]) if v6 else socket.inet_ntop(socket.AF_INET, raw[:4])
        if kind == "netmask":
            return _SCALARS["be32" if self.af == AF_INET else "uint32"].unpack_from(raw)[0]
        if kind == "flags":
            flags, mask = _FLAGS.unpack_from(raw)
            return {"flags": flags, "mask": mask}
        if kind == "ip4addr":
            return socket.inet_ntop(socket.AF_INET, raw[:4])
        if kind == "ip6addr":
            return socket.inet_ntop(socket.AF_INET6, raw[:16])
        raise ValueError(f"no wire decoding for attribute kind {kind!r}")


class Message(Nest):
    """One IPVS reply: its top-level attributes, and its bytes (`raw`) for the GET_INFO decoder."""

    __slots__ = ("cmd", "raw")

    def __init__(self, data: bytes, start: int, end: int, af: int = 0) -> None:
        self.cmd = data[start + _NLMSGHDR.size]
        self.raw = data[start:end]
        super().__init__(TOP, data, start + _NLMSGHDR.size + _GENLHDR.size, end, af)


def replies(data: bytes, seq: int, *, af: int = 0) -> tuple[list[Message], int | None, bool]:
    """Split a datagram into the replies to `seq`: (messages, errno from an error message or None, done)."""
    out: list[Message] = []
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, _, mseq, _ = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size:
            break
        end = pos + length
        if mseq == seq:
            if kind == NLMSG_ERROR:
                return out, -_ERR.unpack_from(data, pos + _NLMSGHDR.size)[0], True
            if kind == NLMSG_DONE:  # carries the dump's own error, if it failed midway
                failed = length >= _NLMSGHDR.size + _ERR.size and _ERR.unpack_from(data, pos + _NLMSGHDR.size)[0]
                return out, -int(failed) if failed else None, True
            out.append(Message(data, pos, end, af))
        pos += _pad(length)
    return out, None, False


class _Shape:
    """The byte layout of one kind of nest as a kernel writes it: which attributes, in which order, of which sizes
    (inner nests flattened), as one `struct` format. A kernel writes every dest of a family alike, so a dest's
    values come out of one `unpack_from`; the attribute headers come out with them and are compared with this
    shape's in one step, so a nest that differs (another order, an attribute more or less) gets its own shape."""

    _KINDS: ClassVar[dict[str, str]] = {"uint8": "B", "uint16": "H", "uint32": "I", "uint64": "Q", "be16": "2s"}

    def __init__(self, raw: bytes, table: Table) -> None:
        self._fmt = ["="]
        self._count = 0
        self.where: dict[str, int] = {}  # "PORT", "STATS64.CONNS", ... -> its index in the unpacked values
        heads: list[int] = []
        self._walk(raw, 0, len(raw), table, "", heads)
        self.struct = struct.Struct("".join(self._fmt))
        if self.struct.size != len(raw) or len(heads) < 2:
            raise ValueError("not a nest this decoder can lay out")
        self.headers = operator.itemgetter(*heads)
        self.expected = self.headers(self.struct.unpack_from(raw))
        zero = self._count  # where a value the nest lacks is read from: a 0 put after the unpacked ones

        def picker(names: tuple[str, ...]) -> operator.itemgetter[Any]:
            return operator.itemgetter(*(self.where.get(n, zero) for n in names))

        self.ints = picker(_INTS)
        self.stats = picker(_STATS) if any(n in self.where for n in _STATS) else None

    def _field(self, fmt: str) -> int:
        self._fmt.append(fmt)
        self._count += 1
        return self._count - 1

    def _walk(self, raw: bytes, start: int, end: int, table: Table, prefix: str, heads: list[int]) -> None:
        pos = start
        while pos < end:
            if pos + 4 > end:
                raise ValueError("a truncated attribute")
            length, number = _NLA.unpack_from(raw, pos)
            if length < 4 or pos + length > end:
                raise ValueError("a malformed attribute")
            heads += [self._field("H"), self._field("H")]
            name = table.numbers.get(number & NLA_TYPE_MASK, "")
            entry = table.names.get(name)
            short, size = prefix + name.rsplit("_ATTR_", 1)[-1], length - 4
            code = self._KINDS.get(entry[1], "") if entry is not None else ""
            if entry is not None and entry[2] is not None:
                self._walk(raw, pos + 4, pos + length, entry[2], short + ".", heads)
            elif code and struct.calcsize("=" + code) == size:
                self.where[short] = self._field(code)
            elif entry is not None and entry[1].startswith("target(") and size >= 4:
                self.where[short] = self._field(f"{size}s")
            elif size:
                self._field(f"{size}s")  # an attribute the decoder does not read: only its place is checked
            padded = min(_pad(length), end - pos)
            if padded > length:
                self._fmt.append(f"{padded - length}x")
            pos += padded


_DEST_TABLE = TOP.names["IPVS_CMD_ATTR_DEST"][2]
_STATS = tuple(f"STATS64.{f.upper()}" for f in m._STATS_FIELDS)
_INTS = ("ADDR_FAMILY", "FWD_METHOD", "WEIGHT", "U_THRESH", "L_THRESH", "TUN_TYPE", "TUN_FLAGS", "ACTIVE_CONNS",
         "INACT_CONNS", "PERSIST_CONNS")
_shapes: dict[int, _Shape] = {}  # by the nest's length: the dests of one kernel and family share one


def dest(msg: Message, service_af: int) -> Dest:
    """A dest from a NEW_DEST reply, `_messages.decode_dest`'s result (tests/unit/test_messages.py compares them) at
    a fraction of its cost: a resync reads every dest of the table, and 10,000 dests through `get_attr` took
    ~25 µs each natively, seconds in the lab."""
    raw = msg.payloads.get("IPVS_CMD_ATTR_DEST")
    if raw is None or _DEST_TABLE is None:
        return m.decode_dest(msg, service_af)
    shape = _shapes.get(len(raw))
    values = shape.struct.unpack_from(raw) if shape is not None else None
    if shape is None or values is None or shape.headers(values) != shape.expected:
        try:
            shape = _Shape(raw, _DEST_TABLE)
        except (ValueError, struct.error):
            return m.decode_dest(msg, service_af)
        if len(_shapes) >= 16:  # never grows with a hostile or odd kernel's replies
            _shapes.clear()
        _shapes[len(raw)] = shape
        values = shape.struct.unpack_from(raw)
    values += (0,)
    w = shape.where
    af, fwd, weight, u_thresh, l_thresh, tun_type, tun_flags, active, inact, persist = shape.ints(values)
    nest_af = af or msg.af
    addr: str | None = None
    if "ADDR" in w:
        a = values[w["ADDR"]]
        addr = socket.inet_ntop(socket.AF_INET6, a[:16]) if nest_af != AF_INET and len(a) >= 16 \
            else socket.inet_ntop(socket.AF_INET, a[:4])
    port = int.from_bytes(values[w["PORT"]], "big") if "PORT" in w else 0
    tun_port = int.from_bytes(values[w["TUN_PORT"]], "big") if "TUN_PORT" in w else 0
    attrs = DestAttrs(fwd=fwd, weight=weight, u_thresh=u_thresh, l_thresh=l_thresh, tun_type=tun_type,
                      tun_port=tun_port, tun_flags=tun_flags)
    return Dest(key=DestKey(af=int(af or service_af), addr=addr, port=port), attrs=attrs,  # type: ignore[arg-type]
                active_conns=active, inact_conns=inact, persist_conns=persist,
                stats=Stats(*shape.stats(values)) if shape.stats is not None else Stats())
