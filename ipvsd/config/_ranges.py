"""Address ranges as the legacy formats write them: ldirectord `a->b`, keepalived `a.b.c.d-e` and CIDR."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

MAX_EXPANSION = 4096
"""Most addresses one range may produce; a larger one is almost certainly a typo."""


def expand_range(text: str) -> Iterator[str]:
    """ldirectord `first->last` (IPv4 only), inclusive."""
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
    for i in range(int(a), int(b) + 1):
        yield str(ipaddress.IPv4Address(i))


def expand_group_address(text: str) -> Iterator[str]:
    """keepalived virtual_server_group entry address: `ip`, `ip-last` (last part of v4, last group of v6),
    or `ip/prefix`."""
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an address/prefix") from None
        if net.num_addresses > MAX_EXPANSION:
            raise ValueError(f"{text!r}: more than {MAX_EXPANSION} addresses")
        yield from (str(a) for a in net)
        return
    head, sep, tail = text.rpartition("-")
    if not sep:
        yield str(ipaddress.ip_address(text))
        return
    try:
        first = ipaddress.ip_address(head)
    except ValueError:
        raise ValueError(f"{text!r} is not an address range (a.b.c.d-e)") from None
    if first.version == 4:
        if not tail.isdigit():
            raise ValueError(f"{text!r}: the range end must be the last octet")
        end = int(tail)
        last_part = int(first) & 0xFF
        if not last_part <= end <= 255:
            raise ValueError(f"{text!r}: the range end must be between {last_part} and 255")
        count = end - last_part + 1
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
    for i in range(count):
        yield str(first + i)
