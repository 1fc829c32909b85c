"""Whether this host's kernel can load an IPVS scheduler: built in, already loaded, or a module on disk.

`ipvsd check` only warns about a scheduler name outside the kernel's own list (the configuration may be meant
for another host, with an out-of-tree module). The daemon runs here: when the host can tell that the module is
missing, a start or a reload is refused with the warning's place, rather than accepted and then refused by the
kernel op by op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ipvsd.config._report import ConfigWarning
from ipvsd.config.schema import KNOWN_SCHEDULERS, Config
from ipvsd.errors import ConfigError


def scheduler_available(name: str, *, root: Path = Path("/"), release: str | None = None) -> bool | None:
    """True or False when the host can tell; None when it cannot (no module index: a container, say)."""
    module = f"ip_vs_{name}"
    if (root / "sys" / "module" / module).exists():
        return True
    moddir = root / "lib" / "modules" / (release or os.uname().release)
    try:
        index = (moddir / "modules.dep").read_text(errors="replace")
    except OSError:
        return None
    with contextlib.suppress(OSError):  # older kernels and some builds have none: modules.dep is enough
        index += (moddir / "modules.builtin").read_text(errors="replace")
    # Entries look like "kernel/net/netfilter/ipvs/ip_vs_wrr.ko.xz: ..." (the suffix depends on compression).
    return f"/{module}.ko" in index


def refused_schedulers(config: Config, warnings: Iterable[ConfigWarning],
                       available: Callable[[str], bool | None] = scheduler_available) -> list[ConfigError]:
    """An error for each scheduler outside the kernel's list that this host cannot load, placed where the
    configuration names it (the place of lint's warning about it)."""
    located = [w for w in warnings if w.key == "services.scheduler"]
    out = []
    for name in sorted({s.scheduler for s in config.services} - set(KNOWN_SCHEDULERS)):
        if available(name) is not False:
            continue
        w = next((w for w in located if repr(name) in w.message), None)
        out.append(ConfigError(f"unknown scheduler {name!r}: this kernel has no module ip_vs_{name}; it has "
                               f"{' '.join(KNOWN_SCHEDULERS)}", path=w.path if w else None,
                               line=w.line if w else None, key="services.scheduler"))
    return out
