"""Import a package's submodules without running its `__init__.py`, which imports far more than ipvsd uses.

pyroute2's imports some 160 modules (IPRoute, NDB, IPDB, unittest...) that the kernel adapter never uses;
prometheus_client's imports its HTTP and WSGI servers (http.server, wsgiref, urllib, email) and registers
process and platform collectors that ipvsd's own registry does not hold. Under the lab's emulated CPU every
import is costly. The package object put in its place has the same search path; its submodules import as
usual, and any other attribute (`from pyroute2 import IPRoute`) runs the real `__init__` into it on first use,
so other users of the package see no difference.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


def install(name: str) -> None:
    """Put the lean package object in place, unless the package is already imported."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return
    pkg = types.ModuleType(name)
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__file__ = spec.origin
    pkg.__loader__ = spec.loader
    loader = spec.loader
    full = False

    def __getattr__(attr: str) -> Any:
        nonlocal full
        if attr.startswith("__"):
            raise AttributeError(attr)
        if importlib.util.find_spec(f"{pkg.__name__}.{attr}") is not None:
            return importlib.import_module(f"{pkg.__name__}.{attr}")
        if not full:
            full = True
            del pkg.__dict__["__getattr__"]
            loader.exec_module(pkg)  # the real __init__, run once, into this same module
            return getattr(pkg, attr)
        raise AttributeError(f"module {pkg.__name__!r} has no attribute {attr!r}")

    pkg.__dict__["__getattr__"] = __getattr__
    sys.modules[name] = pkg
