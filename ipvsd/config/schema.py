"""The one canonical configuration: frozen pydantic models every reader converges on, defaults on every field.

Nothing outside `ipvsd.config` learns which syntax a file used; the daemon, the checks and the planner see only
these models. Readers resolve inheritance (global check defaults, service-wide forward/weight) before
validation, so every field of a validated model is concrete except where `None` is documented to mean
"inherit from the enclosing service".
"""

from __future__ import annotations

import functools
import ipaddress
import operator
import os
import re
import warnings
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar, overload

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator, model_validator

from ipvsd import model
from ipvsd.config import sysctls

_T = TypeVar("_T")


class _Cached(Generic[_T]):
    """functools.cached_property without its lock (Python 3.12 dropped it too): a start of 10,000 reals makes
    30,000 such values, and taking an RLock for each was a third of preparing the configuration. Two threads
    asking at once both work the value out; either result is the same value."""

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Cached[_T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> _T | _Cached[_T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)  # found in the instance from now on, before this
        return value


class _Frozen(BaseModel):
    # Defaults are not validated at each use (validate_default cost a third of validating a large config): they
    # are written in their validated form, which tests/unit/config/test_schema.py checks once per model.
    # The attribute docstrings document the keys (docs/config.md, ipvsd.toml(5)): ipvsd.manpages reads them.
    model_config = ConfigDict(frozen=True, extra="forbid", ignored_types=(_Cached,))

    # What a model works out from its fields once (_Cached): it writes the instance's __dict__, which a frozen
    # model allows, and pydantic leaves such entries out of equality and hashing; a copy (which may change
    # fields: model_copy(update=...)) starts without them.
    _CACHED: ClassVar[tuple[str, ...]] = ()

    def __copy__(self) -> Self:
        copy = super().__copy__()
        for name in self._CACHED:
            copy.__dict__.pop(name, None)
        return copy

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        copy = super().__deepcopy__(memo)
        for name in self._CACHED:
            copy.__dict__.pop(name, None)
        return copy


# --- small value types ---------------------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")


# The common case, an IPv4 address already in canonical form, needs no parse: ipaddress showed as the largest
# single cost of loading 60,000-service files.
_CANONICAL_V4 = model.CANONICAL_V4


def _ip(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("an IP address must be a string")
    if _CANONICAL_V4.fullmatch(value):
        return value
    try:
        return model.canonical_addr(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None


def _host(value: Any) -> str:
    """An IP literal (canonicalised) or a syntactically valid hostname, kept as given for later resolution."""
    if not isinstance(value, str):
        raise ValueError("an address must be a string")
    if _CANONICAL_V4.fullmatch(value):
        return value
    try:
        return model.canonical_addr(value)
    except ValueError:
        pass
    if value.replace(".", "").isdecimal() or not _HOSTNAME.match(value):
        raise ValueError(f"{value!r} is neither an IP address nor a valid hostname")
    return value.lower()


def is_count(text: str) -> bool:
    """True for decimal digits that int() can take and that fit any field (at most 18 of them): int() refuses
    a string of thousands of digits with a ValueError, which must not escape a reader."""
    return text.isdecimal() and len(text) <= 18


IPAddr = Annotated[str, BeforeValidator(_ip)]
"""An IP address literal, stored in canonical text form (compressed IPv6, no brackets)."""

HostAddr = Annotated[str, BeforeValidator(_host)]
"""An IP address or a hostname (resolved by the daemon, not at load)."""

# strict: a quoted "80" in a TOML file is a mistake to report, not a value to coerce (floats still take ints)
Port = Annotated[int, Field(ge=0, le=65535, strict=True)]
Seconds = Annotated[float, Field(ge=0, le=86400 * 7, strict=True)]
PositiveSeconds = Annotated[float, Field(gt=0, le=86400 * 7, strict=True)]


def _status_codes(value: Any) -> tuple[tuple[int, int], ...]:
    """Accept 200, "200", "200-299", "200,301-302" or a list of those; return sorted (lo, hi) ranges."""
    items: list[Any] = list(value) if isinstance(value, list | tuple) else [value]
    if all(type(item) is str for item in items):  # a large config repeats a few lists of text thousands of times
        return _status_text_codes(tuple(items))
    return _status_ranges(items)


@functools.lru_cache(maxsize=1024)
def _status_text_codes(items: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    return _status_ranges(list(items))


def _status_ranges(items: list[Any]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, tuple | list) and len(item) == 2:
            lo, hi = int(item[0]), int(item[1])
        elif isinstance(item, int) and not isinstance(item, bool):
            lo = hi = item
        elif isinstance(item, str):
            for part in item.replace(" ", ",").split(","):
                if not part:
                    continue
                a, sep, b = part.partition("-")
                if not is_count(a) or (sep and not is_count(b)):
                    raise ValueError(f"{part!r} is not a status code or range like 200-299")
                out.append((int(a), int(b) if sep else int(a)))
            continue
        else:
            raise ValueError(f"{item!r} is not a status code or range")
        out.append((lo, hi))
    for lo, hi in out:
        if not (100 <= lo <= hi <= 599):
            raise ValueError(f"status range {lo}-{hi} is outside 100-599 or reversed")
    if not out:
        raise ValueError("at least one status code is needed")
    return tuple(sorted(set(out)))


def _status_text(ranges: tuple[tuple[int, int], ...]) -> list[str]:
    return [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges]


StatusCodes = Annotated[
    tuple[tuple[int, int], ...],
    BeforeValidator(_status_codes),
    PlainSerializer(_status_text, return_type=list[str]),
]
"""HTTP status codes as inclusive ranges; written as ["200-299", "301"]."""


@functools.lru_cache(maxsize=4096)
def _regex_error(value: str) -> str | None:
    """Why `value` does not compile, or None. Cached: large configs repeat one pattern thousands of times, and
    catch_warnings costs more than the compile."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(value)
    except (re.error, TypeError, OverflowError, RecursionError) as e:
        return str(e)
    return None


def _regex(value: Any) -> Any:
    if value is not None:
        error = _regex_error(value) if isinstance(value, str) else "not a string"
        if error is not None:
            raise ValueError(f"invalid regular expression {value!r}: {error}")
    return value


Regex = Annotated[str, BeforeValidator(_regex)]


def _slash(value: Any) -> Any:
    return "/" + value if isinstance(value, str) and not value.startswith("/") else value


def _hex(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"([0-9A-Fa-f]{2})*", value):
        raise ValueError(f"{value!r} is not an even-length hex string")
    return value.lower() if isinstance(value, str) else value


def _hex_pattern(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"([0-9A-Fa-fXx]{2})*", value):
        raise ValueError(f"{value!r} is not an even-length hex pattern (X is a wildcard nibble)")
    return value.lower() if isinstance(value, str) else value


HexBytes = Annotated[str, BeforeValidator(_hex)]
HexPattern = Annotated[str, BeforeValidator(_hex_pattern)]


# --- checks ---------------------------------------------------------------------------------------------------


class CheckTiming(_Frozen):
    """When a check runs and how its results become up/down (keepalived's names where they exist)."""

    interval: PositiveSeconds = 10.0
    """Seconds between checks of one real while its state is settled (ldirectord checkinterval, keepalived
    delay_loop)."""
    timeout: PositiveSeconds = 5.0
    """Seconds one attempt may take before it counts as a failure (checktimeout / connect_timeout)."""
    rise: int = Field(strict=True, default=1, ge=1, le=1000)
    """Consecutive successes before a down real is marked up."""
    fall: int = Field(strict=True, default=1, ge=1, le=1000)
    """Consecutive failures before an up real is marked down (ldirectord failurecount; keepalived retry+1)."""
    retry_delay: Seconds | None = None
    """Seconds to the next attempt while a failure streak has not yet reached `fall` (keepalived
    delay_before_retry). None: the normal interval."""
    warmup: Seconds | None = None
    """The first check runs after a random delay in [0, warmup). None: up to `interval`; 0: at once."""
    alpha: bool = True
    """Start each real down until its checks pass (keepalived alpha). ipvsd's default avoids sending traffic
    to a never-checked real; the keepalived reader keeps keepalived's default (off) unless `alpha` is set."""


class CheckTarget(CheckTiming):
    """Where a check connects, when it differs from the real itself."""

    address: HostAddr | None = None
    """Address to connect to (keepalived connect_ip). None: the real's address."""
    port: Port | None = None
    """Port to connect to (ldirectord checkport, keepalived connect_port). None: the real's port."""
    bindto: IPAddr | None = None
    """Source address of the check's socket."""
    mark: int | None = Field(strict=True, default=None, ge=1, le=0xFFFFFFFF)
    """SO_MARK for the check's packets (keepalived fwmark), to steer checks along the data path."""
    connect_rounds: int = Field(strict=True, default=0, ge=0, le=1000)
    """ldirectord checktype=N: run N plain TCP connects between two full protocol checks. 0: always full."""


class HttpCheck(CheckTarget):
    """An HTTP or HTTPS request whose status and body are checked (ldirectord negotiate http/https,
    keepalived HTTP_GET/SSL_GET with one `url` block)."""

    type: Literal["http", "https"]
    method: Literal["GET", "HEAD"] = "GET"
    """HTTP method."""
    path: Annotated[str, BeforeValidator(_slash)] = "/"
    """Request target; a leading "/" is added if missing."""
    host: str | None = None
    """Host header (ldirectord/keepalived virtualhost). None: the target address."""
    expect_status: StatusCodes = ((200, 299),)
    """Acceptable status codes and ranges."""
    receive: str | None = None
    """A substring the body must contain."""
    regex: Regex | None = None
    """A regular expression the body must match (ldirectord receive, keepalived regex)."""
    regex_no_match: Regex | None = None
    """A regular expression the body must not match (keepalived regex_no_match)."""
    digest: HexBytes | None = None
    """MD5 hex digest the body must have (keepalived url digest)."""
    max_body_bytes: int = Field(strict=True, default=65536, ge=0, le=1 << 30)
    """How much of the body receive and regex look at (the first bytes); digest hashes the whole body, streamed."""
    tls_verify: bool = False
    """Verify the server certificate (https). Off by default: reals are addressed by IP, as in both peers."""
    ca_file: str | None = None
    """CA bundle for tls_verify. None: the system store."""
    sni: str | None = None
    """TLS server name. None: `host` if set, else no SNI for an IP target."""
    reuse_connection: bool = False
    """Keep the connection open between checks (HTTP keep-alive)."""
    sentinel: bool = True
    """Between checks, watch the kept connection so a peer close/reset marks the real down at once."""

    def accepts(self, status: int) -> bool:
        """True when `status` is one of the expected codes."""
        return any(lo <= status <= hi for lo, hi in self.expect_status)


class TcpCheck(CheckTarget):
    """A TCP connect (ldirectord connect, keepalived TCP_CHECK)."""

    type: Literal["tcp"]
    sentinel: bool = True
    """Hold the connection between checks and mark the real down when the peer closes or resets it."""


class SimpleTcpCheck(CheckTarget):
    """Send a string, expect a reply matching a regex (ldirectord service=simpletcp)."""

    type: Literal["simpletcp"]
    send: str = ""
    """Bytes to send (UTF-8), "\\n" sequences already expanded."""
    expect: Regex | None = None
    """Regular expression the reply must match. None: any reply, even empty, after a successful send."""


class UdpCheck(CheckTarget):
    """A UDP datagram and optional reply match (keepalived UDP_CHECK)."""

    type: Literal["udp"]
    payload: HexBytes | None = None
    """Datagram as hex. None: a random payload."""
    expect: HexPattern | None = None
    """Required reply prefix as hex, X as a wildcard nibble. None: no reply needed (ICMP unreachable = down)."""
    min_reply_length: int = Field(strict=True, default=0, ge=0, le=65535)
    """Shortest acceptable reply (bytes)."""
    max_reply_length: int = Field(strict=True, default=255, ge=0, le=65535)
    """Longest acceptable reply (bytes)."""


class DnsCheck(CheckTarget):
    """A DNS query (ldirectord service=dns, keepalived DNS_CHECK)."""

    type: Literal["dns"]
    name: str = "."
    """Name to query."""
    qtype: Literal["A", "AAAA", "NS", "CNAME", "SOA", "MX", "TXT", "PTR", "SRV"] = "SOA"
    """Record type to query."""
    expect: str | None = None
    """An answer (e.g. an address) that must be present. None: any NOERROR answer with records."""
    transport: Literal["udp", "tcp"] = "udp"
    """Query over UDP or TCP."""


class PingCheck(CheckTarget):
    """ICMP echo (ldirectord ping, keepalived PING_CHECK)."""

    type: Literal["ping"]
    count: int = Field(strict=True, default=1, ge=1, le=100)
    """Echo requests per attempt; one reply is enough (ldirectord checkcount)."""


class SmtpCheck(CheckTarget):
    """SMTP greeting + HELO/EHLO + QUIT (ldirectord smtp/submission, keepalived SMTP_CHECK)."""

    type: Literal["smtp"]
    helo: str | None = None
    """Name sent in HELO. None: this host's name."""


class FtpCheck(CheckTarget):
    """FTP login, optionally fetch a file (ldirectord service=ftp)."""

    type: Literal["ftp"]
    login: str = "anonymous"
    """User name."""
    password: str | None = None
    """Password. Unset: ldirectord's anonymous-FTP convention (an e-mail-like string)."""
    path: str | None = None
    """File to RETR. None: login only."""
    receive: Regex | None = None
    """Regular expression the fetched file must match."""


class MailboxCheck(CheckTarget):
    """POP3 or IMAP greeting, optional login (ldirectord pop/pops/imap/imaps)."""

    type: Literal["pop", "imap"]
    tls: bool = False
    """Implicit TLS (pops/imaps)."""
    login: str | None = None
    """User to log in as. Unset: greeting only."""
    password: str | None = None
    """Password for login."""


class NntpCheck(CheckTarget):
    """NNTP greeting (ldirectord service=nntp)."""

    type: Literal["nntp"]


class ExternalCheck(CheckTarget):
    """Run a command; exit 0 means up (ldirectord external, keepalived MISC_CHECK)."""

    type: Literal["external"]
    command: str
    """The executable: an absolute path, or a name found on the fixed PATH the command runs with (its
    environment is cleared; it runs from /, as the peers' daemons do)."""
    args: tuple[str, ...] = ()
    """Arguments before the target ones."""
    pass_target: bool = True
    """Append vip vport rip rport to the arguments, as ldirectord does (fwmark services pass the mark as vip)."""
    dynamic_weight: bool = False
    """keepalived misc_dynamic: exit 2-255 sets the weight to status-2."""
    user: str | None = None
    """Run as this user, with its group and no other groups (keepalived MISC_CHECK user). Needs CAP_SETUID and
    CAP_SETGID, which the shipped systemd unit does not grant: without them the daemon refuses the configuration."""


class StaticCheck(CheckTarget):
    """Always up (`on`) or always down (`off`)."""

    type: Literal["on", "off"]


Check = Annotated[
    HttpCheck | TcpCheck | SimpleTcpCheck | UdpCheck | DnsCheck | PingCheck | SmtpCheck | FtpCheck
    | MailboxCheck | NntpCheck | ExternalCheck | StaticCheck,
    Field(discriminator="type"),
]
"""Any check, chosen by its `type`."""

CHECK_TYPES: tuple[str, ...] = ("http", "https", "tcp", "simpletcp", "udp", "dns", "ping", "smtp", "ftp", "pop",
                                "imap", "nntp", "external", "on", "off")


# --- servers -------------------------------------------------------------------------------------------------

OnFailure = Literal["remove", "quiesce"]
"""What a failed real becomes: deleted from the table, or kept at weight 0 (ldirectord quiescent=yes,
keepalived inhibit_on_failure)."""

Forward = Literal["masq", "route", "tunnel"]


_FORWARD_ALIASES = {"nat": "masq", "masq": "masq", "m": "masq", "dr": "route", "gate": "route", "route": "route",
                    "direct": "route", "g": "route", "tun": "tunnel", "tunnel": "tunnel", "ipip": "tunnel",
                    "i": "tunnel"}


def _forward(value: Any) -> Any:
    if isinstance(value, str):
        return _FORWARD_ALIASES.get(value) or _FORWARD_ALIASES.get(value.lower(), value)
    return value


ForwardName = Annotated[Forward, BeforeValidator(_forward)]


class Tunnel(_Frozen):
    """Encapsulation of a tunnel-forwarded real (keepalived lvs_method TUN type ...)."""

    type: Literal["ipip", "gue", "gre"] = "ipip"
    """Encapsulation."""
    port: Port = 0
    """GUE destination port (required for gue)."""
    csum: Literal["nocsum", "csum", "remcsum"] = "nocsum"
    """Checksum option of gue/gre."""

    @model_validator(mode="after")
    def _gue_port(self) -> Tunnel:
        if self.type == "gue" and not self.port:
            raise ValueError("a gue tunnel needs a port")
        if self.type == "ipip" and self.csum != "nocsum":
            raise ValueError("checksum options apply to gue and gre tunnels only")
        return self


_FWD = {"masq": model.Fwd.MASQ, "route": model.Fwd.ROUTE, "tunnel": model.Fwd.TUNNEL}


_NO_TUNNEL = Tunnel()  # built once: constructing a model per real per pass showed in 10k-real profiles


class RealServer(_Frozen):
    """A backend of a virtual service."""

    address: HostAddr
    """IP address or hostname (hostnames are resolved by the daemon, not at load). Native files may write an
    IPv4 range `a->b`."""
    port: Port = 0
    """Destination port; 0 for fwmark services means "the packet's own port"."""
    forward: ForwardName = "masq"
    """masq (NAT), route (DR, ldirectord gate) or tunnel (ipip/gue/gre)."""
    tunnel: Tunnel | None = None
    """Tunnel details when forward = tunnel. None: plain ipip."""
    weight: int = Field(strict=True, default=1, ge=0, le=2147483647)
    """Weight while healthy; 0 keeps the real in the table without new connections."""
    u_threshold: int = Field(strict=True, default=0, ge=0, le=2147483647)
    """Upper connection threshold (ipvsadm -x); 0: none."""
    l_threshold: int = Field(strict=True, default=0, ge=0, le=2147483647)
    """Lower connection threshold (ipvsadm -y); 0: none."""
    checks: tuple[Check, ...] | None = None
    """This real's own checks (all must pass). None: the service's checks."""
    on_failure: OnFailure | None = None
    """Override of the service's on_failure. None: the service's."""
    slow_start: Seconds | None = None
    """Override of the service's slow_start; 0: this real always starts at its full weight. None: the
    service's."""

    @model_validator(mode="after")
    def _tunnel_needs_tunnel(self) -> RealServer:
        if self.tunnel is not None and self.forward != "tunnel":
            raise ValueError("tunnel settings need forward = \"tunnel\"")
        return self

    def dest_key(self, address: str | None = None) -> model.DestKey:
        """The kernel key, with `address` the resolved IP when the real is a hostname."""
        if address is None or address == self.address:
            return self._own_key
        return model.DestKey.of(address, self.port)

    def dest_attrs(self, weight: int | None = None) -> model.DestAttrs:
        """Kernel attributes; `weight` overrides the configured one (0 when quiesced)."""
        if weight is None or weight == self.weight:
            return self._own_attrs
        return self._attrs(weight)

    # Every pass keys every real and asks its attributes: made once per real of a configuration (both are
    # frozen), they cost a pass over 10,000 reals a fifth less (see _Frozen._CACHED).
    _CACHED: ClassVar[tuple[str, ...]] = ("_own_key", "_own_attrs", "is_literal")

    @_Cached
    def is_literal(self) -> bool:
        """True when `address` is an IP address (the kernel's as it is), False for a host name to resolve."""
        return model.is_ip(self.address)

    @_Cached
    def _own_key(self) -> model.DestKey:
        return model.DestKey.of(self.address, self.port)

    @_Cached
    def _own_attrs(self) -> model.DestAttrs:
        return self._attrs(self.weight)

    def _attrs(self, weight: int) -> model.DestAttrs:
        tun = self.tunnel or _NO_TUNNEL
        return model.DestAttrs(
            fwd=_FWD[self.forward],
            weight=weight,
            u_thresh=self.u_threshold,
            l_thresh=self.l_threshold,
            tun_type=model.TunType[tun.type.upper()] if self.forward == "tunnel" else model.TunType.IPIP,
            tun_port=tun.port if self.forward == "tunnel" else 0,
            tun_flags=model.TunFlags[tun.csum.upper()] if self.forward == "tunnel" else model.TunFlags.NOCSUM,
        )


class FallbackServer(_Frozen):
    """Where traffic goes when no real is up or quorum is lost (ldirectord fallback, keepalived sorry_server)."""

    address: HostAddr
    """IP address or hostname of the sorry server."""
    port: Port = 0
    """0: the service's port."""
    forward: ForwardName = "route"
    """ldirectord's default is gate (route); the keepalived reader sets the service's method."""
    weight: int = Field(strict=True, default=1, ge=0, le=2147483647)
    """Weight while in use."""
    inhibit: bool = False
    """Keep the sorry server in the table at weight 0 while not needed (keepalived sorry_server_inhibit)."""


class Persistence(_Frozen):
    """Client affinity (ipvsadm -p/-M/--pe)."""

    timeout: int = Field(strict=True, default=300, ge=1, le=2147483647)
    """Seconds a client stays on its real after its last connection."""
    netmask: str | int | None = None
    """Group clients by network: IPv4 dotted mask ("255.255.255.0"), or an IPv6 prefix length. None: one
    client address."""
    pe: Literal["sip"] | None = None
    """Persistence engine."""


KNOWN_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos")
"""The schedulers the kernel ships (modules ip_vs_NAME); `ipvsd check` warns about any other name."""

# The kernel loads module ip_vs_NAME and keeps NAME in IP_VS_SCHEDNAME_MAXLEN (16) bytes with its NUL.
_SCHED_NAME = re.compile(r"[a-z0-9_]{1,15}")


_KNOWN_SCHEDULERS = frozenset(KNOWN_SCHEDULERS)


def _scheduler(value: Any) -> Any:
    if isinstance(value, str) and value not in _KNOWN_SCHEDULERS and not _SCHED_NAME.fullmatch(value):
        raise ValueError(f"{value!r} cannot be an IPVS scheduler name (1-15 characters of a-z, 0-9 and _); "
                         f"the kernel has {' '.join(KNOWN_SCHEDULERS)}")
    return value


def _sched_flags(value: Any) -> Any:
    names = {"flag-1": 1, "flag-2": 2, "flag-3": 3, "sh-fallback": 1, "sh-port": 2, "mh-fallback": 1,
             "mh-port": 2, "1": 1, "2": 2, "3": 3}
    if isinstance(value, str):
        value = [v for v in value.replace(" ", ",").split(",") if v]
    if isinstance(value, list | tuple):
        out = []
        for v in value:
            key = str(v).lower()
            if key not in names:
                raise ValueError(f"unknown scheduler flag {v!r} (flag-1..3, sh-port, sh-fallback, mh-port, "
                                 "mh-fallback)")
            out.append(names[key])
        return tuple(sorted(set(out)))
    return value


SchedFlags = Annotated[tuple[Literal[1, 2, 3], ...], BeforeValidator(_sched_flags)]

_SCHED_FLAG_BITS = {1: model.SvcFlag.SCHED1, 2: model.SvcFlag.SCHED2, 3: model.SvcFlag.SCHED3}


class VirtualService(_Frozen):
    """A virtual service: VIP:port/protocol or fwmark, its scheduling, reals, checks and failure policy."""

    name: str | None = None
    """Free text for logs and metrics (ldirectord servicename)."""
    address: IPAddr | None = None
    """VIP. Exactly one of address and fwmark is set."""
    port: Port = 0
    """VIP port (required with an address)."""
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    """Transport protocol of an address service."""
    fwmark: int | None = Field(strict=True, default=None, ge=1, le=0xFFFFFFFF)
    """Firewall mark of a fwmark service."""
    family: Literal["inet", "inet6"] = "inet"
    """Address family of a fwmark service (ignored with an address, whose family wins)."""
    scheduler: Annotated[str, BeforeValidator(_scheduler)] = "wlc"
    """IPVS scheduler name (rr, wrr, lc, wlc, lblc, lblcr, dh, sh, mh, sed, nq, fo, ovf, twos)."""
    sched_flags: SchedFlags = ()
    """Scheduler flags 1..3 (sh-fallback/mh-fallback = 1, sh-port/mh-port = 2)."""
    persistence: Persistence | None = None
    """Client affinity. Unset: none."""
    ops: bool = False
    """One-packet scheduling (UDP)."""
    reals: tuple[RealServer, ...] = ()
    """The backends."""
    checks: tuple[Check, ...] = ()
    """Checks of every real without its own (all must pass). Empty: reals are always considered up."""
    on_failure: OnFailure = "remove"
    """remove: delete a failed real; quiesce: keep it at weight 0."""
    fallback: FallbackServer | None = None
    """Sorry server. Unset: none."""
    fallback_command: str | None = None
    """Run as `cmd start|stop vip:vport proto` when the last real goes down / the first comes back."""
    quorum: int = Field(strict=True, default=1, ge=0, le=2147483647)
    """Minimum total weight of healthy reals; below it the fallback server is used."""
    hysteresis: int = Field(strict=True, default=0, ge=0, le=2147483647)
    """Quorum is lost below quorum-hysteresis and regained at quorum+hysteresis."""
    quorum_up: str | None = None
    """Command run when quorum is gained."""
    quorum_down: str | None = None
    """Command run when quorum is lost."""
    drain_timeout: Seconds | None = None
    """Seconds a real removed from the config stays at weight 0 before deletion. None: the global default."""
    slow_start: Seconds = 0.0
    """Seconds a real that comes back up (or is added by a reload) takes to reach its weight, in 4 steps of a
    quarter each (25 %, 50 %, 75 %, then 100 % of it, rounded up), while another real of the service keeps
    serving (HAProxy slowstart): a cold server is not flooded. 0: at once."""
    announce: bool | tuple[IPAddr, ...] = True
    """With [announce]: true announces the service's address while the service has quorum, false never, a list
    announces those addresses instead (a fwmark service's VIPs)."""

    @model_validator(mode="before")
    @classmethod
    def _normalise_netmask(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        p = data.get("persistence")
        if isinstance(p, dict) and p.get("netmask") is not None:
            six = ":" in str(data.get("address") or "") or bool(data.get("fwmark") and data.get("family") == "inet6")
            data = {**data, "persistence": {**p, "netmask": _netmask(p["netmask"], six)}}
        return data

    @model_validator(mode="after")
    def _identity(self) -> VirtualService:
        if (self.address is None) == (self.fwmark is None):
            raise ValueError("a virtual service needs exactly one of address (with port) or fwmark")
        if self.address is not None and self.port == 0:
            raise ValueError("a virtual service on an address needs a port")
        if self.ops and self.protocol != "udp" and self.fwmark is None:
            raise ValueError("ops (one-packet scheduling) applies to udp services")
        reals = self.reals
        if len(reals) > 1 and len({(r.address, r.port) for r in reals}) < len(reals):
            seen: set[tuple[str, int]] = set()
            for r in reals:
                if (r.address, r.port) in seen:
                    raise ValueError(f"real {model.addrport(r.address, r.port)} appears twice")
                seen.add((r.address, r.port))
        if isinstance(self.announce, tuple):
            for vip in self.announce:
                if model.family_of(vip) != self.af:
                    mine, theirs = ("IPv6", "IPv4") if self.af == model.AF_INET6 else ("IPv4", "IPv6")
                    raise ValueError(f"announce: {vip} is {theirs} but the service is {mine}")
        return self

    def announced(self) -> tuple[str, ...]:
        """The VIPs this service's quorum announces when [announce] is configured."""
        if self.announce is True:
            return () if self.address is None else (self.address,)
        return () if self.announce is False else self.announce

    @property
    def af(self) -> int:
        if self.address is not None:  # a validated IP literal, canonical: only IPv6 has a colon
            return model.AF_INET6 if ":" in self.address else model.AF_INET
        return model.AF_INET6 if self.family == "inet6" else model.AF_INET

    # One key object per service model: every pass looks services up by key, and a lookup with the very object
    # a table was made with needs no comparison of fields (see _Frozen._CACHED).
    _CACHED: ClassVar[tuple[str, ...]] = ("_key", "ramps", "every_check", "identity", "external_users")

    @_Cached
    def identity(self) -> tuple[Any, ...]:
        """What tells services apart as service_key() does, in a plain tuple (addresses are canonical already):
        a reload compares those of every service it kept, which a tuple's C hash does at once."""
        return (self.fwmark, self.af) if self.fwmark is not None else (self.protocol, self.address, self.port)

    @_Cached
    def every_check(self) -> tuple[Check, ...]:
        """The service's checks and its reals' own, each model once (a reload asks it of every service)."""
        seen: dict[int, Check] = {id(c): c for c in self.checks}
        for r in self.reals:
            for c in r.checks or ():
                seen.setdefault(id(c), c)
        return tuple(seen.values())

    @_Cached
    def external_users(self) -> frozenset[str]:
        """The `user`s its external checks run as (a reload asks it of every service)."""
        return frozenset(c.user for c in self.every_check if isinstance(c, ExternalCheck) and c.user)

    @_Cached
    def ramps(self) -> bool:
        """True when a real of this service has a slow start (a reload asks it of every service it kept)."""
        return bool(self.slow_start or any(r.slow_start for r in self.reals))

    def service_key(self) -> model.ServiceKey:
        """The kernel key of this service."""
        return self._key

    @_Cached
    def _key(self) -> model.ServiceKey:
        if self.fwmark is not None:
            return model.ServiceKey.mark(self.fwmark, self.af)
        assert self.address is not None
        return model.ServiceKey.inet(model.Proto[self.protocol.upper()], self.address, self.port)

    def service_attrs(self) -> model.ServiceAttrs:
        """The kernel attributes of this service."""
        flags = 0
        for f in self.sched_flags:
            flags |= _SCHED_FLAG_BITS[f]
        if self.ops:
            flags |= model.SvcFlag.ONEPACKET
        netmask = model.full_netmask(self.af)
        timeout = 0
        pe = ""
        if self.persistence is not None:
            flags |= model.SvcFlag.PERSISTENT
            timeout = self.persistence.timeout
            pe = self.persistence.pe or ""
            if self.persistence.netmask is not None:
                m = self.persistence.netmask
                netmask = int(ipaddress.IPv4Address(m)) if isinstance(m, str) else int(m)
        return model.ServiceAttrs(scheduler=self.scheduler, flags=flags, timeout=timeout, netmask=netmask,
                                  pe_name=pe)

    def checks_for(self, real: RealServer) -> tuple[Check, ...]:
        """The checks that decide `real`'s health."""
        return self.checks if real.checks is None else real.checks

    def on_failure_for(self, real: RealServer) -> OnFailure:
        """What a failure of `real` does."""
        return self.on_failure if real.on_failure is None else real.on_failure

    def slow_start_for(self, real: RealServer) -> float:
        """Seconds `real` ramps to its weight when it comes back (0: none)."""
        return self.slow_start if real.slow_start is None else real.slow_start

    def fallback_dest(self, address: str | None = None) -> tuple[model.DestKey, model.DestAttrs] | None:
        """The fallback server as a kernel dest (its port defaults to the service's); `address` is the resolved
        IP when the fallback is a hostname."""
        if self.fallback is None:
            return None
        fb = self.fallback
        real = RealServer(address=fb.address, port=fb.port or self.port, forward=fb.forward, weight=fb.weight)
        return real.dest_key(address), real.dest_attrs()


def _netmask(value: Any, six: bool) -> Any:
    """IPv4: dotted mask (a prefix length is converted); IPv6: a prefix length."""
    if six:
        text = str(value).lstrip("/")
        if not is_count(text) or not 0 <= int(text) <= 128:
            raise ValueError(f"IPv6 persistence netmask {value!r} must be a prefix length 0-128")
        return int(text)
    text = str(value).lstrip("/")
    if is_count(text):
        if not 0 <= int(text) <= 32:
            raise ValueError(f"IPv4 persistence netmask {value!r} must be a dotted mask or a prefix 0-32")
        return str(ipaddress.IPv4Network(f"0.0.0.0/{text}").netmask)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 netmask") from None


# --- global settings -------------------------------------------------------------------------------------------


class Limits(_Frozen):
    """Blast-radius guards on what one reconcile may do."""

    max_deletes: int | None = Field(default=None, ge=0)
    """Refuse a plan deleting more services+reals than this. None: no absolute cap."""
    max_delete_fraction: float = Field(default=0.5, ge=0, le=1)
    """Refuse a plan deleting more than this fraction of owned entries (a full wipe needs `ipvsd` flags)."""
    panic_fraction: float = Field(default=1.0, ge=0, le=1)
    """When more than this fraction of a service's reals fail, keep them all (fail open). 1.0: never."""
    check_concurrency: int = Field(default=256, ge=1, le=100000)
    """Most checks in flight at once (fewer while the daemon is short of CPU: see docs/checks.md)."""


def _listen_address(value: str | None) -> str | None:
    """host:port or [v6]:port with a port 0-65535 and an IP or hostname host; empty/off/none: no endpoint."""
    if value is None or value.strip().lower() in ("", "off", "none"):
        return value
    text = value.strip()
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if close and rest.startswith(":") else ""
        six = True
    else:
        host, _, port = text.rpartition(":")
        six = False
    if not host or not is_count(port) or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (port 0-65535; [v6]:port for IPv6)")
    try:
        _ip(host) if six else _host(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is neither an IP address nor a valid hostname") from None
    return value


_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes on Linux, with the terminating NUL


def _unix_socket_path(value: str) -> str:
    size = len(os.fsencode(value))
    if not value or size > _SUN_PATH_MAX:
        raise ValueError(f"a Unix socket path must be 1-{_SUN_PATH_MAX} bytes (got {size})")
    if "\0" in value:
        raise ValueError("a Unix socket path cannot contain a NUL byte")
    return value


class Settings(_Frozen):
    """Daemon-wide settings; a reload applies every one of them except those in RESTART_ONLY."""

    RESTART_ONLY: ClassVar[frozenset[str]] = frozenset({"metrics_listen", "control_socket", "state_dir"})
    """Settings the daemon uses only as it starts: a reload that changes them says they need a restart."""

    resync_interval: PositiveSeconds = 30.0
    """Seconds between full reads of the kernel's table (drift repair). Passes in between (health transitions,
    reloads) plan against the last read patched with the ops ipvsd applied since; a drain that must know whether a
    real is idle, an operator command and any failed op read the kernel at once."""
    metrics_listen: str | None = "127.0.0.1:9597"
    """host:port of the Prometheus endpoint. None: no metrics endpoint."""
    control_socket: str = "/run/ipvsd/control.sock"
    """Unix socket of the control API (`ipvsd status`, `drain`, `reload`)."""
    state_dir: str = "/var/lib/ipvsd"
    """Where ipvsd keeps what it owns and its maintenance state across restarts."""
    drain_timeout: Seconds = 0.0
    """Default seconds a real removed from the config is drained at weight 0 before deletion. 0: delete at once
    (both peers' behaviour)."""
    clean_stop: bool = False
    """Delete owned services and reals on stop (ldirectord cleanstop). Off: a stop or restart leaves the table
    serving (hitless). The ldirectord reader defaults it on, as ldirectord does."""
    maintenance_dir: str | None = None
    """A file named ip[:port] or host[:port] here forces that real down (ldirectord maintenancedir)."""
    readd_quiescent: bool = False
    """Re-add a quiesced real that vanished from the table (ldirectord readdquiescent)."""
    watch_config: bool = True
    """Reload when the config files change: at once when a file is renamed into place or closed after writing,
    10 ms after a removal or a change of mode, and not while a file is still open for writing (1 s after its
    last write at the latest). An invalid file is rejected and the running configuration stays. The ldirectord
    reader follows `autoreload` (default no), the keepalived reader turns it off (keepalived reloads on
    SIGHUP). SIGHUP and `ipvsd reload` always work."""
    config_callback: str | None = None
    """Command run with the config path when the config changes on disk (ldirectord callback)."""
    dns_ttl: PositiveSeconds = 60.0
    """Seconds between resolutions of the host names in the config (reals, check addresses, fallbacks). A name
    that does not resolve is tried again at its checks' interval; what needs it is down (reason dns) meanwhile,
    and a name that stops resolving keeps its last address."""
    vips: tuple[IPAddr, ...] = ()
    """Addresses whose presence on this director is reported (status, metric, event), besides the services'
    own addresses: the VIP of a fwmark service, for example."""
    limits: Limits = Limits()
    """Blast-radius guards."""

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        return _listen_address(value)

    @field_validator("control_socket")
    @classmethod
    def _socket_path(cls, value: str) -> str:
        return _unix_socket_path(value)


class LvsTimeouts(_Frozen):
    """IPVS connection timeouts to set (keepalived lvs_timeouts); 0 leaves the kernel's value."""

    tcp: int = Field(strict=True, default=0, ge=0)
    """TCP established timeout (s)."""
    tcp_fin: int = Field(strict=True, default=0, ge=0)
    """TCP FIN_WAIT timeout (s)."""
    udp: int = Field(strict=True, default=0, ge=0)
    """UDP timeout (s)."""


_IFNAME = re.compile(r"[^/\s:\0]+")  # the kernel's dev_valid_name: no '/', ':' or blanks (and a C string: no NUL)


def _ifname(value: Any) -> str:
    # Linux IFNAMSIZ is 16 bytes with the terminating NUL: 15 bytes of UTF-8, not 15 characters
    if (not isinstance(value, str) or not _IFNAME.fullmatch(value) or value in (".", "..")
            or len(value.encode("utf-8", "surrogatepass")) > 15):
        raise ValueError(f"{value!r} is not a network interface name (1-15 bytes, no '/', ':' or blanks)")
    return value


IfName = Annotated[str, BeforeValidator(_ifname)]


class Sync(_Frozen):
    """IPVS connection synchronisation between directors: the kernel's sync daemons (ipvsadm --start-daemon).

    With `owner = "ipvsd"` ipvsd starts the daemons named in `daemons`, adopts matching ones it finds, repairs
    one that disappears or differs, and stops them on stop only with `clean_stop`. The kernel sends only from a
    director that forwards traffic, so running master and backup on every director needs no VRRP state."""

    interface: IfName
    """Interface the sync messages are sent and received on. The master daemon binds its first global-scope IPv4
    address (`ipvsd check` says when it has none)."""
    syncid: int = Field(strict=True, default=0, ge=0, le=255)
    """Sync id shared by the pair; a backup with syncid 0 accepts every id."""
    daemons: Literal["both", "master", "backup"] = "both"
    """Which daemons run on this director: both (keepalived >= 2.1 without `inst`), or only one."""
    owner: Literal["ipvsd", "external"] = "ipvsd"
    """external: keepalived's `lvs_sync_daemon ... inst` (or an operator) runs the daemons; ipvsd only shows them."""
    group: IPAddr | None = None
    """Multicast group. None: the kernel's default, 224.0.0.81."""
    port: Port = 0
    """UDP port. 0: the kernel's default, 8848."""
    ttl: int = Field(strict=True, default=0, ge=0, le=255)
    """Multicast TTL. 0: the kernel's default, 1."""
    maxlen: int = Field(strict=True, default=0, ge=0, le=65507)
    """Largest sync message payload in bytes. 0: the kernel's default (from the interface's MTU)."""

    @field_validator("group")
    @classmethod
    def _multicast(cls, value: str | None) -> str | None:
        if value is not None and not ipaddress.ip_address(value).is_multicast:
            raise ValueError(f"{value!r} is not a multicast address (224.0.0.0/4 or ff00::/8)")
        return value

    def wanted(self) -> tuple[model.SyncDaemon, ...]:
        """The daemons this section asks for, as the kernel reports them (master first)."""
        states = {"both": (1, 2), "master": (1,), "backup": (2,)}[self.daemons]
        return tuple(model.SyncDaemon(state=s, mcast_ifn=self.interface, syncid=self.syncid, sync_maxlen=self.maxlen,
                                      mcast_group=self.group or "", mcast_port=self.port, mcast_ttl=self.ttl)
                     for s in states)


ROUTING_DAEMON_PROTOCOLS = {8: "gated", 9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp",
                            15: "ntk", 16: "dhcp", 17: "mrouted", 18: "keepalived", 42: "babel", 186: "bgp",
                            187: "isis", 188: "ospf", 189: "rip", 192: "eigrp"}
"""Route protocol numbers iproute2 names for a routing daemon: such a daemon takes those routes for its own."""
RESERVED_TABLES = {253: "default", 254: "main", 255: "local"}


class Announce(_Frozen):
    """VIP routes for a routing daemon to export (BGP scale-out): while a service has quorum, a host route of its
    VIP stays in a kernel routing table of ipvsd's own, with ipvsd's own route protocol number. BIRD's
    `protocol kernel { kernel table N; learn; }` reads the table; no process talks to BIRD."""

    table: int = Field(strict=True, ge=1, le=0xFFFFFFFF)
    """The kernel routing table ipvsd keeps its routes in: one no other program writes to."""
    protocol: int = Field(strict=True, default=99, ge=5, le=255)
    """The route protocol number of ipvsd's routes (`ip route ... proto N`); only routes with it are ipvsd's."""
    device: IfName = "lo"
    """The routes' device (direct routing keeps the VIP on lo)."""
    withdraw_delay: Seconds = 2.0
    """Seconds between withdrawing a route and taking the service's reals out (quorum lost, `ipvsd drain
    --director`, a clean stop): the routers move the flows to the other directors first."""
    on_stop: Literal["withdraw", "keep"] = "withdraw"
    """What a stop does to the routes: withdraw them, or keep them (a restart then costs no route flap; a crash
    keeps them either way, until the routing daemon's session ends)."""

    @field_validator("table")
    @classmethod
    def _own_table(cls, value: int) -> int:
        if value in RESERVED_TABLES:
            raise ValueError(f"table {value} is the kernel's {RESERVED_TABLES[value]!r} table; use a table of "
                             f"ipvsd's own (1-252 or above 255)")
        return value

    @field_validator("protocol")
    @classmethod
    def _own_protocol(cls, value: int) -> int:
        if value in ROUTING_DAEMON_PROTOCOLS:
            raise ValueError(f"protocol {value} is {ROUTING_DAEMON_PROTOCOLS[value]!r}'s: that daemon would take "
                             f"ipvsd's routes for its own; use an unnamed number (99 by default)")
        return value


SysctlValue = sysctls.SysctlValue
"""One net.ipv4.vs.* value: an integer, a vector of integers (sync_threshold) or a string (est_cpulist)."""


def _sysctls(value: Any) -> Any:
    """Each knob checked against the kernel's table (`ipvsd.config.sysctls`), booleans as 0/1, vectors as tuples."""
    if not isinstance(value, dict):
        return value
    out: dict[str, SysctlValue] = {}
    for name, v in value.items():
        try:
            out[name] = sysctls.check(name, v)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    return out


class Config(_Frozen):
    """A whole ipvsd configuration."""

    settings: Settings = Settings()
    check_defaults: CheckTiming = CheckTiming()
    """Timing every check inherits unless it sets its own (already applied to every check by the readers)."""
    lvs_timeouts: LvsTimeouts | None = None
    sync: Sync | None = None
    """Connection synchronisation with the other director(s). None: ipvsd leaves sync daemons alone."""
    sysctl: Annotated[dict[str, SysctlValue], BeforeValidator(_sysctls)] = Field(default_factory=dict)
    """net.ipv4.vs.* settings (names without the prefix) set at start and at every reload in ipvsd's network
    namespace; what is not named keeps its value."""
    announce: Announce | None = None
    """VIP routes for BGP scale-out. None: ipvsd writes no routes."""
    services: tuple[VirtualService, ...] = ()

    _CACHED: ClassVar[tuple[str, ...]] = ("slow_starting",)

    @_Cached
    def slow_starting(self) -> tuple[VirtualService, ...]:
        """The services with a slow start for any of their reals (asked at every pass; most have none)."""
        return tuple(vs for vs in self.services if vs.ramps)

    @model_validator(mode="after")
    def _unique_services(self) -> Config:
        if (twice := defined_twice(self.services)) is not None:
            raise ValueError(f"virtual service {twice.service_key()} is defined twice")
        return self


def defined_twice(services: tuple[VirtualService, ...]) -> VirtualService | None:
    """The first service whose key an earlier one has, or None."""
    keys = list(map(operator.attrgetter("identity"), services))  # each model's, worked out once (cached)
    if len(set(keys)) == len(keys):
        return None
    seen: set[tuple[Any, ...]] = set()
    for s, k in zip(services, keys, strict=True):
        if k in seen:
            return s
        seen.add(k)
    return None
