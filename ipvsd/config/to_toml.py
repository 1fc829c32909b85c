"""Write a Config as native TOML that reads back to the same Config (`ipvsd convert`).

Only what differs from a default is written, except each real's address and port, so the output stays short.
A check's timing is written only where it differs from `[check_defaults]`, which the reader fills back in.
"""

from __future__ import annotations

from typing import Any

from ipvsd.config.schema import CheckTiming, Config, RealServer, VirtualService

_AUTO_KEYS = ("retry_delay", "warmup")
_TIMING = tuple(CheckTiming.model_fields)


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _emit(table: dict[str, Any], path: str, out: list[str]) -> None:
    for k, v in table.items():
        if not isinstance(v, dict) and not _is_table_array(v):
            out.append(f"{k} = {_value(v)}")
    for k, v in table.items():
        if isinstance(v, dict):
            out.append("")
            out.append(f"[{path}{k}]")
            _emit(v, f"{path}{k}.", out)
    for k, v in table.items():
        if _is_table_array(v):
            for item in v:
                out.append("")
                out.append(f"[[{path}{k}]]")
                _emit(item, f"{path}{k}.", out)


def _check(check: Any, defaults: CheckTiming) -> dict[str, Any]:
    full = check.model_dump(mode="json")
    trimmed = check.model_dump(mode="json", exclude_defaults=True)
    out: dict[str, Any] = {"type": full["type"]}
    for k, v in full.items():
        if k == "type":
            continue
        if k in _TIMING:
            if v != getattr(defaults, k):
                out[k] = "auto" if v is None and k in _AUTO_KEYS else v
        elif k in trimmed:
            out[k] = v
    return out


def _real(real: RealServer, defaults: CheckTiming) -> dict[str, Any]:
    out: dict[str, Any] = {"address": real.address, "port": real.port}
    rest = real.model_dump(mode="json", exclude_defaults=True, exclude={"address", "port", "checks"})
    out.update(rest)
    if real.checks is not None:
        out["checks"] = [_check(c, defaults) for c in real.checks]
    return out


def _service(svc: VirtualService, defaults: CheckTiming) -> dict[str, Any]:
    out = svc.model_dump(mode="json", exclude_defaults=True, exclude={"reals", "checks"})
    if svc.checks:
        out["checks"] = [_check(c, defaults) for c in svc.checks]
    if svc.reals:
        out["reals"] = [_real(r, defaults) for r in svc.reals]
    return out


def to_toml(config: Config, header: list[str] | None = None) -> str:
    """The native TOML text of `config`; `header` lines are written first as comments."""
    doc: dict[str, Any] = {"include": []}
    settings = config.settings.model_dump(mode="json", exclude_defaults=True)
    if "metrics_listen" in settings and settings["metrics_listen"] is None:
        settings["metrics_listen"] = ""
    if settings:
        doc["settings"] = settings
    cd = config.check_defaults.model_dump(mode="json", exclude_defaults=True)
    if cd:
        doc["check_defaults"] = {k: ("auto" if v is None and k in _AUTO_KEYS else v) for k, v in cd.items()}
    if config.lvs_timeouts is not None:
        doc["lvs_timeouts"] = config.lvs_timeouts.model_dump(mode="json")
    if config.sync is not None:
        doc["sync"] = {"interface": config.sync.interface,
                       **config.sync.model_dump(mode="json", exclude_defaults=True, exclude={"interface"})}
    if config.sysctl:
        doc["sysctl"] = dict(config.sysctl)  # a vector (sync_threshold) is written as a TOML array
    if config.announce is not None:
        doc["announce"] = {"table": config.announce.table,
                           **config.announce.model_dump(mode="json", exclude_defaults=True, exclude={"table"})}
    doc["services"] = [_service(s, config.check_defaults) for s in config.services]
    out = [f"# {h}" for h in (header or [])]
    out.append("# include = [] keeps drop-ins next to this file out of it; remove the line to use conf.d/*.toml.")
    _emit(doc, "", out)
    return "\n".join(out).strip("\n") + "\n"
