"""Smoke: ipvsd's kernel adapter programs a rr service over rs1/rs2, and traffic through the VIP alternates."""

from __future__ import annotations

import itertools
import re

from ipvsd.kernel.netlink import NetlinkKernel
from ipvsd.model import DestAttrs, DestKey, Fwd, Proto, ServiceAttrs, ServiceKey
from tests.kernel.lab import Lab


def dest_line(addr: str, fwd: str, weight: int, active: int = 0, inact: int = 0) -> str:
    return "  -> %-28s %-7s %-6d %-10u %-10u" % (addr, fwd, weight, active, inact)  # noqa: UP031 (ipvsadm's printf)


async def test_rr_over_two_reals_through_the_vip(lab: Lab) -> None:
    kernel = NetlinkKernel(netns=lab.lb)
    svc = ServiceKey.inet(Proto.TCP, lab.vip, 80)
    try:
        await kernel.add_service(svc, ServiceAttrs(scheduler="rr"))
        for r in lab.reals:
            await kernel.add_dest(svc, DestKey.of(r.addr, 80), DestAttrs(fwd=Fwd.MASQ, weight=1))
    finally:
        await kernel.close()

    lines = lab.ipvsadm("-Ln").splitlines()
    assert re.fullmatch(r"IP Virtual Server version \d+\.\d+\.\d+ \(size=\d+\)", lines[0])
    assert lines[1:] == [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        "TCP  10.2.0.240:80 rr",
        dest_line("10.2.1.242:80", "Masq", 1),
        dest_line("10.2.1.243:80", "Masq", 1),
    ]

    served = []
    for _ in range(10):
        status, body = lab.get()
        assert status == 200
        served.append(body.strip())
    assert sorted(set(served)) == ["debian11-rs1", "debian11-rs2"], served
    assert all(a != b for a, b in itertools.pairwise(served)), f"not round-robin: {served}"
