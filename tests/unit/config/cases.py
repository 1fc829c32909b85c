"""The golden cases: every fixture config and `etc/` sample, with where its expected JSON lives."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ipvsd.config import ConfigErrors, ConfigWarning, load, sniff
from ipvsd.config.schema import Config
from ipvsd.errors import ConfigError

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
ROOT = HERE.parents[2]


def cases() -> dict[str, tuple[Path, Path]]:
    """name -> (config path, expected JSON path)."""
    out: dict[str, tuple[Path, Path]] = {}
    for p in sorted(FIXTURES.iterdir()):
        if p.is_file() and p.suffix in (".cf", ".conf", ".toml"):
            out[p.name] = (p, p.with_name(p.name + ".expected.json"))
        elif p.is_dir() and (p / "ipvsd.toml").exists():
            out[p.name] = (p / "ipvsd.toml", FIXTURES / f"{p.name}.expected.json")
    for name in ("ipvsd.toml", "ldirectord.cf", "keepalived.conf"):
        out[f"etc/{name}"] = (ROOT / "etc" / name, FIXTURES / f"etc_{name}.expected.json")
    return out


def normalized(path: Path) -> dict[str, Any]:
    """What a golden file holds: the format, the normalized model, and the warnings (without the path)."""
    config, warnings = load(str(path))
    return {
        "format": sniff(str(path)),
        "warnings": [f"{w.line}: {w.level}: {w.key}: {w.message}" for w in warnings],
        "config": config.model_dump(mode="json"),
    }


def regenerate() -> None:
    """Rewrite every golden file; review the diff by eye (`git diff tests/unit/config/fixtures`)."""
    for name, (src, expected) in cases().items():
        expected.write_text(json.dumps(normalized(src), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {expected.relative_to(ROOT)} ({name})")


if __name__ == "__main__":
    regenerate()


def outcome(read: Callable[[], tuple[Config, list[ConfigWarning]]]) -> tuple[Any, ...]:
    """Everything a reading tells, comparable: the model and the warnings, or every error, each located."""
    try:
        config, warnings = read()
    except ConfigErrors as e:
        return "errors", [(x.path, x.line, x.key, x.message) for x in e.errors], e.total
    except ConfigError as e:
        return "error", e.path, e.line, e.key, e.message
    return "ok", config.model_dump(), [(w.message, w.path, w.line, w.key, w.level) for w in warnings]


def both_paths(read: Callable[..., tuple[Config, list[ConfigWarning]]], *args: str) -> tuple[Any, ...]:
    """`outcome` of `read(*args)`, which must be the outcome of its plain path, `read(*args, fast=False)`."""
    fast = outcome(lambda: read(*args))
    assert fast == outcome(lambda: read(*args, fast=False)), args
    return fast
