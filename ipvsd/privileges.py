"""Who ipvsd runs as and which capabilities it holds, so an error names the privilege that is missing.

ipvsd is meant to run as its own user with CAP_NET_ADMIN and CAP_NET_RAW only (etc/ipvsd.service,
docs/least-privilege.md); what needs more (a metrics port below 1024, an external check run as another user)
is refused with a line that says which capability and where to grant it, not with a bare EACCES or EPERM.
"""

from __future__ import annotations

import os
import pwd

CAP_SETGID = 6
CAP_SETUID = 7
CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13

UNIT_HINT = "add it to CapabilityBoundingSet= and AmbientCapabilities= in the systemd unit"


def effective() -> int:
    """The effective capability set of this process, as a bit mask (CapEff of /proc/self/status)."""
    try:
        with open("/proc/self/status", "rb") as f:  # bytes: no codec to look up (and import) on an error path
            for line in f:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    # Without /proc, assume what the uid says: root has everything, another user nothing.
    return -1 if os.geteuid() == 0 else 0


def has(*caps: int) -> bool:
    """True when every capability in `caps` is effective."""
    mask = effective()
    return all(mask >> cap & 1 for cap in caps)


_NAMES = {CAP_SETGID: "CAP_SETGID", CAP_SETUID: "CAP_SETUID", CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE",
          CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW"}


def names() -> str:
    """The effective capabilities, named: `CAP_NET_ADMIN, CAP_NET_RAW`; `no capability`; `38 capabilities`."""
    mask = effective()
    found = [_NAMES.get(bit, f"capability {bit}") for bit in range(64) if mask >> bit & 1]
    if len(found) > len(_NAMES):  # root's set, or close to it: a count says enough
        return f"{len(found)} capabilities"
    return ", ".join(found) or "no capability"


def whoami() -> str:
    """The effective user, as an error names it: `uid 998 (ipvsd)`, or `uid 4242` when it has no name."""
    uid = os.geteuid()
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def unreadable(path: str) -> str:
    """What to add to a `Permission denied` on a file ipvsd reads, when it runs as a user other than root."""
    if os.geteuid() == 0:
        return ""
    return f" (ipvsd runs as {whoami()}: let it read {path}, e.g. chgrp it to ipvsd's group and chmod g+r)"
