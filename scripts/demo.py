"""The demo scenario, run inside the lab: build the topology, let ipvsd program the director, show traffic."""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
from pathlib import Path

from ipvsd.kernel.netlink import NetlinkKernel

from ipvsd.model import DestAttrs, DestKey, Fwd, Proto, ServiceAttrs, ServiceKey
from tests.kernel.lab import Lab


async def program(lab: Lab) -> None:
    kernel = NetlinkKernel(netns=lab.lb)
    svc = ServiceKey.inet(Proto.TCP, lab.vip, 80)
    try:
        await kernel.add_service(svc, ServiceAttrs(scheduler="rr"))
        print(f"ipvsd: -A {svc} -s rr")
        for r in lab.reals:
            key, attrs = DestKey.of(r.addr, 80), DestAttrs(fwd=Fwd.MASQ, weight=1)
            await kernel.add_dest(svc, key, attrs)
            print(f"ipvsd: -a {svc} -r {key} {attrs.notation()}")
    finally:
        await kernel.close()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(root=Path(tmp), n=2).up()
        try:
            reals = ", ".join(f"{r.name} {r.addr}" for r in lab.reals)
            print(f"lab: client 10.2.0.1 -> VIP {lab.vip} [lb] -> {reals}")
            asyncio.run(program(lab))
            print("\n$ ipvsadm -Ln   (in lb)")
            print(lab.ipvsadm("-Ln"), end="")
            print(f"\n$ 6 x GET http://{lab.vip}/   (from client)")
            served = []
            for i in range(6):
                status, body = lab.get()
                served.append(body.strip())
                print(f"  request {i + 1}: {status} {body.strip()}")
            alternating = all(a != b for a, b in itertools.pairwise(served))
            print(f"\nround-robin over rs1/rs2: {'yes' if alternating else 'NO'}")
            return 0 if alternating else 1
        finally:
            lab.down()


if __name__ == "__main__":
    sys.exit(main())
