"""`ipvsd status`: which VIPs this director holds, then the daemon's view of every real — health, reason, since
when, configured vs kernel weight (a real in slow start: its ramp's weight now / the configured one, and when the
ramp ends) — then the connection-sync daemons and the sysctls ipvsd sets."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ipvsd.commands import client_config
from ipvsd.shell.control import add_socket_arguments, call


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_socket_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="show every check of every real")


def run(args: argparse.Namespace) -> int:
    client_config(args)
    answer = call(args, "status")
    if answer is None:
        return 1
    if args.json:
        print(json.dumps({k: v for k, v in answer.items() if k != "ok"}, indent=2))
    else:
        print(render(answer, now=time.time(), verbose=args.verbose), end="")
    return 0


def age(since: float | None, now: float) -> str:
    """A compact age: 42s, 5m, 3h, 2d."""
    if since is None:
        return "-"
    s = max(0, int(now - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def render(answer: dict[str, Any], *, now: float, verbose: bool = False) -> str:
    """The status answer as aligned text: the VIPs this director holds or not, then one block per virtual service."""
    out: list[str] = _vips(answer.get("vips"), now)
    for svc in answer.get("services", []):
        flags = [svc["scheduler"]]
        if not svc["in_kernel"]:
            flags.append("not in the kernel")
        if svc.get("quorum") is False:
            flags.append("QUORUM LOST")
        if svc.get("fail_open"):
            flags.append("FAIL-OPEN (too many reals down: all serve)")
        out.append(f"{svc['service']}  {'  '.join(flags)}")
        rows = [("REAL", "STATE", "WEIGHT", "KERNEL", "CONNS", "SINCE", "REASON")]
        for r in svc["reals"]:
            kw = "-" if r["kernel_weight"] is None else str(r["kernel_weight"])
            real = r["real"] if r["name"] in r["real"] else f"{r['real']} ({r['name']})"
            reason = r["reason"]
            m = r.get("maintenance")
            if m and m.get("until"):
                reason += f" (until {time.strftime('%Y-%m-%d %H:%M', time.localtime(m['until']))})"
            weight = str(r["weight"])
            ramp = r.get("slow_start")
            if ramp:  # the weight the ramp gives it now, of the configured one
                weight = f"{ramp['weight']}/{ramp['target']}"
                reason += (f" (slow start until {time.strftime('%H:%M:%S', time.localtime(ramp['until']))}, "
                           f"{max(0.0, ramp['until'] - now):.0f}s left)")
            rows.append((real, r["state"], weight, kw, f"{r['active']}/{r['inactive']}", age(r["since"], now),
                         reason))
            if verbose:
                for c in r["checks"]:
                    state = ("up" if c["up"] else "down") if c["settled"] else "pending"
                    rows.append((f"  {c['check']} {c['target']}", state, "", "", "", age(c["since"], now),
                                 f"{c['reason'] or '-'} ({c['successes']} ok / {c['failures']} failed in a row)"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            out.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
        out.append("")
    unmatched = [m for m in answer.get("maintenance", []) if not _applies(m, answer)]
    for m in unmatched:
        out.append(f"maintenance entry {m['addr']}{':' + str(m['port']) if m['port'] else ''} matches no real "
                   f"({m['source']})")
    if not out:
        out.append("no virtual services configured")
    out.extend(_side_tables(answer))
    return "\n".join(out).rstrip("\n") + "\n"


def _side_tables(answer: dict[str, Any]) -> list[str]:
    """The connection-sync daemons and the sysctls ipvsd sets, when there are any."""
    out: list[str] = []
    daemons = answer.get("sync") or []
    if daemons:
        out += ["", "sync daemons"]
        rows: list[tuple[str, ...]] = [("DAEMON", "STATE", "INTERFACE", "SYNCID", "OWNER", "ERROR")]
        for d in daemons:
            state = "running" if d["running"] else ("MISSING" if d["configured"] else "stopped")
            rows.append((d["role"], state, d["interface"], str(d["syncid"]), d["owner"], d["error"] or "-"))
        out += _table(rows)
    routes = answer.get("routes") or []
    if routes:
        out += ["", "VIP routes ([announce])"]
        held: list[tuple[str, ...]] = [("ROUTE", "STATE", "WHY")]
        for x in routes:
            why = x["error"] or x["why"] or "-"
            held.append((str(x["route"]), "announced" if x["announced"] else "WITHDRAWN", why))
        out += _table(held)
    sysctls = answer.get("sysctls") or []
    if sysctls:
        out += ["", "sysctls (net.ipv4.vs.*)"]
        knobs: list[tuple[str, ...]] = [("NAME", "SET", "KERNEL", "STATE", "ERROR")]
        for x in sysctls:
            state = {"drift": "DRIFT (until the next reload)", "error": "NOT SET"}.get(x["state"], x["state"])
            knobs.append((str(x["name"]), str(x["wanted"]), str(x["current"] or "-"), state, str(x["error"] or "-")))
        out += _table(knobs)
    return out


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
            for row in rows]


def _vips(vips: list[dict[str, Any]] | None, now: float) -> list[str]:
    """One row per VIP: held by this director or not, since when, on which interfaces (nothing when not observed)."""
    if not vips:
        return []
    rows = [("VIP", "ROLE", "SINCE", "ON")]
    rows += [(v["vip"], "held" if v["held"] else "not held", age(v["since"], now), ", ".join(v["interfaces"]) or "-")
             for v in vips]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]).rstrip()
            for row in rows] + [""]


def _applies(m: dict[str, Any], answer: dict[str, Any]) -> bool:
    return any(r.get("maintenance") and r["maintenance"]["addr"] == m["addr"] and r["maintenance"]["port"] == m["port"]
               for s in answer.get("services", []) for r in s["reals"])
