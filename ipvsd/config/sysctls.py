"""The kernel's net.ipv4.vs.* knobs (Linux 6.1): type and range of each, checked at load, written as /proc text."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeGuard

Kind = Literal["bool", "int", "vector", "cpulist"]

INT_MAX = 2**31 - 1
JIFFIES_MAX = INT_MAX // 1000
"""Seconds the kernel can store in jiffies (proc_dointvec_jiffies refuses more than INT_MAX/HZ; HZ is at most 1000)."""

SysctlValue = int | tuple[int, ...] | str


@dataclass(frozen=True)
class Knob:
    """One file under /proc/sys/net/ipv4/vs: what it holds, what the kernel accepts, when it exists."""

    kind: Kind
    default: str
    description: str
    lo: int = 0
    hi: int = INT_MAX
    power_of_two: bool = False
    since: str | None = None
    """The first Linux version with this file, when newer than 6.1."""
    needs: str | None = None
    """What else must hold for the file to exist (a kernel option, a loaded scheduler module)."""


# Sources: Documentation/networking/ipvs-sysctl.rst and the vs_vars table of net/netfilter/ipvs/ip_vs_ctl.c
# (proc handlers and their ranges), ip_vs_lblc.c / ip_vs_lblcr.c for the expirations.
_DEFENSE = ("0 off, 1 and 2 automatic (the kernel switches between them by available memory), 3 always on")
KNOBS: Mapping[str, Knob] = {
    "am_droprate": Knob("int", "10", "Drop rate of drop_packet's always mode (3): one packet in this many."),
    "amemthresh": Knob("int", "1024", "Available memory (pages) below which the automatic defenses switch on."),
    "backup_only": Knob("bool", "0", "Stop directing traffic while a backup sync daemon runs (avoids DR/TUN "
                                     "loops between directors that are also real servers)."),
    "cache_bypass": Knob("bool", "0", "Forward to the original destination when no cache server is available "
                                      "(transparent cache clusters)."),
    "conn_reuse_mode": Knob("int", "1", "Bitmap for reused source ports: 1 reschedules when safe, 2 also from "
                                        "FIN_WAIT (direct routing); 0 keeps the old real.", hi=3),
    "conntrack": Knob("bool", "0", "Keep netfilter conntrack entries for IPVS connections (for stateful "
                                   "firewall rules).", needs="a kernel built with CONFIG_IP_VS_NFCT"),
    "debug_level": Knob("int", "0", "Verbosity of IPVS debug messages (0-12 and more); global, read-only in "
                                    "other network namespaces.", needs="a kernel built with CONFIG_IP_VS_DEBUG"),
    "drop_entry": Knob("int", "0", f"Drop half-open connection entries under memory pressure: {_DEFENSE}.", hi=3),
    "drop_packet": Knob("int", "0", f"Drop 1/rate packets under memory pressure: {_DEFENSE}.", hi=3),
    "est_cpulist": Knob("cpulist", "the housekeeping CPUs", "CPUs of the rate estimation kthreads (cpulist "
                                                            "syntax; empty stops estimation).", since="6.2"),
    "est_nice": Knob("int", "0", "Nice value of the rate estimation kthreads.", lo=-20, hi=19, since="6.2"),
    "expire_nodest_conn": Knob("bool", "0", "Expire a connection at its next packet when its real is gone, "
                                            "instead of silently dropping the packet."),
    "expire_quiescent_template": Knob("bool", "0", "Expire a persistence template when its real is quiesced "
                                                   "(weight 0), so persistent clients move."),
    "ignore_tunneled": Knob("bool", "0", "Mark packets of unknown protocols (ipip...) as IPVS's own, so "
                                         "tunnelled packets are not scheduled again."),
    "lblc_expiration": Knob("int", "86400", "Seconds an idle lblc entry lives.", hi=JIFFIES_MAX,
                            needs="the ip_vs_lblc module, loaded by an lblc service"),
    "lblcr_expiration": Knob("int", "86400", "Seconds an idle lblcr entry lives.", hi=JIFFIES_MAX,
                             needs="the ip_vs_lblcr module, loaded by an lblcr service"),
    "nat_icmp_send": Knob("bool", "0", "Send ICMP unreachable for NAT replies from reals without a connection "
                                       "entry."),
    "pmtu_disc": Knob("bool", "1", "Reject DF packets over the path MTU with FRAG_NEEDED; 0 fragments them "
                                   "(tunnel forwarding)."),
    "run_estimation": Knob("bool", "1", "Compute the rate estimates (ipvsadm --rate); 0 stops them."),
    "schedule_icmp": Knob("bool", "0", "Schedule ICMP packets of new connections (ICMP services)."),
    "secure_tcp": Knob("int", "0", f"Use the stricter TCP state table: {_DEFENSE}.", hi=3),
    "sloppy_sctp": Knob("bool", "0", "Create connection state from any SCTP packet, not only INIT."),
    "sloppy_tcp": Knob("bool", "0", "Create connection state from any TCP packet, not only SYN (a flow that "
                                    "moves between directors keeps going)."),
    "snat_reroute": Knob("bool", "1", "Route NAT replies as if sent by the director (matters with policy "
                                      "routing)."),
    "sync_persist_mode": Knob("int", "0", "1: for persistent services sync only the templates, not each "
                                          "connection.", hi=1),
    "sync_ports": Knob("int", "1", "Sync threads (and UDP ports from 8848); read when the first daemon starts, "
                                   "at most 64 used.", lo=1, hi=64, power_of_two=True),
    "sync_qlen_max": Knob("int", "1/32 of the memory pages", "Most sync messages queued and not yet sent.",
                          lo=1, hi=2**63 - 1),
    "sync_refresh_period": Knob("int", "0", "Seconds of connection timer change that trigger a new sync "
                                            "message; 0 syncs by sync_threshold.", hi=JIFFIES_MAX),
    "sync_retries": Knob("int", "0", "Resends of a sync message, every sync_refresh_period/8.", hi=3),
    "sync_sock_size": Knob("int", "0", "SNDBUF (master) or RCVBUF (backup) of the sync socket; 0 keeps the "
                                       "system default."),
    "sync_threshold": Knob("vector", "3 50", "A connection is synced at its threshold-th incoming packet and "
                                             "every period packets after; period 0 syncs once (and on state "
                                             "changes)."),
    "sync_version": Knob("int", "1", "Sync protocol sent: 1, or 0 for peers that know only version 0.", hi=1),
}
"""Every net.ipv4.vs.* file, by name without the prefix."""

HINTS: Mapping[str, str] = {
    "sync_period": "sync_period is the second value of sync_threshold: write sync_threshold = [3, 50]",
}
"""Names that are not files, with what to write instead."""

PREFIX = "net.ipv4.vs."

_CPULIST_ITEM = r"(\d+|N)(-(\d+|N)(:\d+/\d+)?)?"
_CPULIST = re.compile(rf"(all|{_CPULIST_ITEM})(,(all|{_CPULIST_ITEM}))*")


def unknown_name(name: str) -> str:
    """Why `name` is refused, with the nearest knob or the fix."""
    if name in HINTS:
        return HINTS[name]
    if name.startswith(PREFIX) or name == "net":
        return f"write the names without the {PREFIX} prefix (e.g. sloppy_tcp = 1)"
    close = difflib.get_close_matches(name, list(KNOBS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown net.ipv4.vs sysctl {name!r}{hint}"


def check(name: str, value: object) -> SysctlValue:
    """`value` for knob `name` in canonical form (booleans as 0/1, vectors as tuples); ValueError says why not."""
    knob = KNOBS.get(name)
    if knob is None:
        raise ValueError(unknown_name(name))
    if knob.kind == "cpulist":
        if not isinstance(value, str) or not (value == "" or _CPULIST.fullmatch(value.replace(" ", ""))):
            raise ValueError(f"must be a CPU list string like \"0-3,8\", \"all\" or \"\" (got {value!r})")
        return value.replace(" ", "")
    if knob.kind == "vector":
        if not isinstance(value, list | tuple) or len(value) != 2 or not all(_is_int(v) for v in value):
            raise ValueError(f"must be two integers [threshold, period], e.g. [3, 50] (got {value!r})")
        threshold, period = (int(v) for v in value)
        if not (0 <= threshold <= INT_MAX and 0 <= period <= INT_MAX):
            raise ValueError(f"threshold and period must not be negative (got {threshold}, {period})")
        if period and threshold >= period:
            raise ValueError(f"the threshold must be below the period unless the period is 0 (got {threshold}, "
                             f"{period})")
        return (threshold, period)
    if knob.kind == "bool":
        if isinstance(value, bool):
            return int(value)
        if _is_int(value) and value in (0, 1):
            return value
        raise ValueError(f"must be true/false or 0/1 (got {value!r})")
    if isinstance(value, bool) or not _is_int(value):
        raise ValueError(f"must be an integer (got {value!r})")
    number = value
    if not knob.lo <= number <= knob.hi:
        raise ValueError(f"must be in {knob.lo}..{knob.hi} (got {number})")
    if knob.power_of_two and number & (number - 1):
        raise ValueError(f"must be a power of two (got {number})")
    return number


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def proc_text(value: SysctlValue) -> str:
    """The text to write to the knob's /proc file: (3, 50) -> "3 50", 1 or True -> "1", a CPU list as given."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)
