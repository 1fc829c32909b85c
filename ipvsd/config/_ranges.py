"""Address ranges as the legacy formats write them: ldirectord `a->b`, keepalived `a.b.c.d-e` and CIDR.

Each range can be counted without being expanded, so readers check their totals before building anything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from ipvsd.config.schema import is_count

MAX_EXPANSION = 4096
"""Most addresses one range may produce; a larger one is almost certainly a typo."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _range_bounds(text: str) -> tuple[int, int]:
    first, _, last = text.partition("->")
    try:
        a = ipaddress.IPv4Address(first.strip())
        b = ipaddress.IPv4Address(last.strip())
    except ValueError:
        raise ValueError(f"{text!r}: address ranges need two IPv4 addresses (first->last)") from None
    if int(b) < int(a):
        raise ValueError(f"{text!r}: the range's last address is before its first")
    if int(b) - int(a) >= MAX_EXPANSION:
        raise ValueError(f"{text!r}: range of more than {MAX_EXPANSION} addresses")
    return int(a), int(b)


def count_range(text: str) -> int:
    """How many addresses ldirectord `first->last` stands for (ValueError when it is invalid)."""
    a, b = _range_bounds(text)
    return b - a + 1


def expand_range(text: str) -> Iterator[str]:
    """ldirectord `first->last` (IPv4 only), inclusive."""
    a, b = _range_bounds(text)
    for i in range(a, b + 1):
        yield str(ipaddress.IPv4Address(i))


def _group_bounds(text: str) -> tuple[Address, int]:
    """The first address and the count of a keepalived group entry."""
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an address/prefix") from None
        if net.num_addresses > MAX_EXPANSION:
            raise ValueError(f"{text!r}: more than {MAX_EXPANSION} addresses")
        return net.network_address, net.num_addresses
    head, sep, tail = text.rpartition("-")
    if not sep:
        return ipaddress.ip_address(text), 1
    try:
        first = ipaddress.ip_address(head)
    except ValueError:
        raise ValueError(f"{text!r} is not an address range (a.b.c.d-e)") from None
    if first.version == 4:
        if not is_count(tail):
            raise ValueError(f"{text!r}: the range end must be the last octet")
        end = int(tail)
        last_part = int(first) & 0xFF
        if not last_part <= end <= 255:
            raise ValueError(f"{text!r}: the range end must be between {last_part} and 255")
    else:
        try:
            end = int(tail, 16)
        except ValueError:
            raise ValueError(f"{text!r}: the range end must be the last hex group") from None
        last_part = int(first) & 0xFFFF
        if not last_part <= end <= 0xFFFF:
            raise ValueError(f"{text!r}: the range end must not be below the first address")
    count = end - last_part + 1
    if count > MAX_EXPANSION:
        raise ValueError(f"{text!r}: more than {MAX_EXPANSION} addresses")
    return first, count


def count_group_address(text: str) -> int:
    """How many addresses a keepalived group entry stands for (ValueError when it is invalid)."""
    return _group_bounds(text)[1]


def expand_group_address(text: str) -> Iterator[str]:
    """keepalived virtual_server_group entry address: `ip`, `ip-last` (last part of v4, last group of v6),
    or `ip/prefix`."""
    first, count = _group_bounds(text)
    if first.version == 4:  # str(IPv4Address) without making one per address
        start = int(first)
        for x in range(start, start + count):
            yield f"{x >> 24}.{x >> 16 & 255}.{x >> 8 & 255}.{x & 255}"
        return
    for i in range(count):
        yield str(first + i)
