"""Hypothesis strategies for whole Configs, used by the convert round-trip property."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from ipvsd.config.schema import Config

text = st.text(max_size=12)
secs = st.floats(min_value=0.001, max_value=3600, allow_nan=False, allow_infinity=False)
maybe_secs = st.none() | st.floats(min_value=0, max_value=3600, allow_nan=False)
ports = st.integers(1, 65535)
v4 = st.integers(0x0A000001, 0x0A0000FE).map(lambda i: f"10.0.0.{i & 0xFF}")
v6 = st.integers(1, 0xFFFE).map(lambda i: f"2001:db8::{i:x}")
hosts = st.sampled_from(["web1.example.com", "db", "a-b.example."])
regexes = st.sampled_from(["^ok", "up|ready", r"\d+", "[a-z]+$"])


def timing() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "interval": secs, "timeout": secs, "rise": st.integers(1, 10), "fall": st.integers(1, 10),
        "retry_delay": maybe_secs, "warmup": maybe_secs, "alpha": st.booleans(),
        "port": st.none() | ports, "address": st.none() | v4 | hosts, "bindto": st.none() | v4,
        "mark": st.none() | st.integers(1, 2**32 - 1), "connect_rounds": st.integers(0, 5)})


def _check(kind: str, extra: dict[str, st.SearchStrategy[Any]],
           required: dict[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(timing(), st.fixed_dictionaries(required or {}, optional=extra)).map(
        lambda t: {"type": kind, **t[0], **t[1]})


checks = st.one_of(
    _check("http", {"method": st.sampled_from(["GET", "HEAD"]), "path": text, "host": st.none() | text,
                    "expect_status": st.lists(st.sampled_from([200, 204, "300-302", "200-299"]), min_size=1,
                                              max_size=3),
                    "receive": st.none() | text, "regex": st.none() | regexes, "max_body_bytes": st.integers(0, 1000),
                    "reuse_connection": st.booleans(), "sentinel": st.booleans()}),
    _check("https", {"tls_verify": st.booleans(), "ca_file": st.none() | text, "sni": st.none() | text,
                     "digest": st.none() | st.just("9b3a0c85a887a256d6939da88aabd8cd")}),
    _check("tcp", {"sentinel": st.booleans()}),
    _check("simpletcp", {"send": text, "expect": st.none() | regexes}),
    _check("udp", {"payload": st.none() | st.just("00ff"), "expect": st.none() | st.just("00xx"),
                   "max_reply_length": st.integers(0, 512)}),
    _check("dns", {"name": text, "qtype": st.sampled_from(["A", "AAAA", "SOA"]), "expect": st.none() | text,
                   "transport": st.sampled_from(["udp", "tcp"])}),
    _check("ping", {"count": st.integers(1, 5)}),
    _check("smtp", {"helo": st.none() | text}),
    _check("ftp", {"login": text, "password": st.none() | text, "path": st.none() | text}),
    _check("pop", {"tls": st.booleans(), "login": st.none() | text}),
    _check("imap", {"tls": st.booleans()}),
    _check("nntp", {}),
    _check("external", {"args": st.lists(text, max_size=3), "pass_target": st.booleans(),
                        "dynamic_weight": st.booleans()}, {"command": st.just("/bin/true")}),
    _check("on", {}),
    _check("off", {}),
)

reals = st.fixed_dictionaries({"address": v4 | hosts, "port": ports}, optional={
    "forward": st.sampled_from(["masq", "route"]), "weight": st.integers(0, 100),
    "u_threshold": st.integers(0, 1000), "l_threshold": st.integers(0, 100),
    "checks": st.lists(checks, max_size=1), "on_failure": st.sampled_from(["remove", "quiesce"])})

tunnel_real = st.fixed_dictionaries({"address": v6, "port": ports, "forward": st.just("tunnel")}, optional={
    "tunnel": st.sampled_from([{"type": "ipip"}, {"type": "gue", "port": 5555, "csum": "remcsum"},
                               {"type": "gre", "csum": "csum"}])})


def _unique_reals(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[str, int]] = set()
    out = []
    for r in rs:
        if (r["address"], r["port"]) not in seen:
            seen.add((r["address"], r["port"]))
            out.append(r)
    return out


service_opts: dict[str, st.SearchStrategy[Any]] = {
    "name": st.none() | text, "scheduler": st.sampled_from(["rr", "wrr", "wlc", "sh", "mh"]),
    "sched_flags": st.lists(st.sampled_from(["flag-1", "sh-port", "mh-fallback", "flag-3"]), max_size=2),
    "checks": st.lists(checks, max_size=2), "on_failure": st.sampled_from(["remove", "quiesce"]),
    "fallback": st.none() | st.fixed_dictionaries({"address": v4}, optional={
        "port": st.integers(0, 65535), "forward": st.sampled_from(["masq", "route", "tunnel"]),
        "weight": st.integers(0, 5), "inhibit": st.booleans()}),
    "fallback_command": st.none() | text, "quorum": st.integers(0, 10), "hysteresis": st.integers(0, 3),
    "quorum_up": st.none() | text, "drain_timeout": maybe_secs,
}

inet_service = st.tuples(
    st.fixed_dictionaries({"address": v4 | v6, "port": ports,
                           "protocol": st.sampled_from(["tcp", "udp", "sctp"])}, optional={
        **service_opts,
        "persistence": st.fixed_dictionaries({}, optional={"timeout": st.integers(1, 10000),
                                                           "netmask": st.sampled_from([24, 16, 32])})}),
    st.lists(reals | tunnel_real, max_size=3),
).map(lambda t: _one_family({**t[0], "reals": _unique_reals(t[1])}))

mark_service = st.tuples(
    st.fixed_dictionaries({"fwmark": st.integers(1, 2**32 - 1)}, optional={
        **service_opts, "family": st.sampled_from(["inet", "inet6"]), "ops": st.booleans()}),
    st.lists(reals, max_size=3),
).map(lambda t: _one_family({**t[0], "reals": _unique_reals(t[1])}))


def _one_family(svc: dict[str, Any]) -> dict[str, Any]:
    """Drop the reals (and sorry server) the kernel would refuse: another family than the service, untunnelled."""
    six = ":" in svc["address"] if "address" in svc else svc.get("family") == "inet6"

    def fits(d: dict[str, Any]) -> bool:
        addr = d["address"]
        return d.get("forward") == "tunnel" or not addr[0].isdigit() or (":" in addr) == six

    out = {**svc, "reals": [r for r in svc["reals"] if fits(r)]}
    if out.get("fallback") and not fits(out["fallback"]):
        out["fallback"] = None
    return out


def _unique_services(ss: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[Any] = set()
    out = []
    for s in ss:
        key = s.get("fwmark") or (s.get("address"), s.get("port"), s.get("protocol"))
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


configs = st.fixed_dictionaries({"services": st.lists(inet_service | mark_service, max_size=3).map(
    _unique_services)}, optional={
    "settings": st.fixed_dictionaries({}, optional={
        "resync_interval": secs, "metrics_listen": st.none() | st.just("[::1]:9000"), "clean_stop": st.booleans(),
        "maintenance_dir": st.none() | text, "drain_timeout": st.floats(0, 100),
        "limits": st.fixed_dictionaries({}, optional={"max_deletes": st.none() | st.integers(0, 9),
                                                      "panic_fraction": st.floats(0, 1)})}),
    "check_defaults": st.fixed_dictionaries({}, optional={
        "interval": secs, "timeout": secs, "rise": st.integers(1, 5), "fall": st.integers(1, 5),
        "retry_delay": maybe_secs, "warmup": maybe_secs, "alpha": st.booleans()}),
    "lvs_timeouts": st.none() | st.fixed_dictionaries({"tcp": st.integers(0, 999), "udp": st.integers(0, 99)}),
    "sync": st.none() | st.fixed_dictionaries({"interface": st.sampled_from(["eth0", "bond0.12", "lo"])}, optional={
        "syncid": st.integers(0, 255), "daemons": st.sampled_from(["both", "master", "backup"]),
        "owner": st.sampled_from(["ipvsd", "external"]), "group": st.sampled_from(["224.0.0.82", "ff02::81"]),
        "port": st.integers(0, 65535), "ttl": st.integers(0, 255), "maxlen": st.integers(0, 65507)}),
    "sysctl": st.fixed_dictionaries({}, optional={
        "sloppy_tcp": st.booleans(), "sync_threshold": st.tuples(st.integers(0, 9), st.integers(10, 99)),
        "conn_reuse_mode": st.integers(0, 3), "est_cpulist": st.sampled_from(["", "0-3", "all"])}),
}).map(Config.model_validate)
