"""Import pyroute2's netlink core without running `pyroute2/__init__.py` (IPRoute, NDB, IPDB, unittest...).

That file imports some 160 modules the adapter never uses: most of ipvsd's start-up time under the lab's
emulated CPU, where every import is file lookups over a shared filesystem. The package object put in its
place has the same search path; its submodules import as usual, and any other attribute (`from pyroute2 import
IPRoute`) runs the real `__init__` into it on first use, so other users of pyroute2 see no difference.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


def install() -> None:
    """Put the lean package object in place, unless pyroute2 is already imported."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return
    pkg = types.ModuleType("pyroute2")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__file__ = spec.origin
    pkg.__loader__ = spec.loader
    loader = spec.loader
    full = False

    def __getattr__(name: str) -> Any:
        nonlocal full
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")
        if not full:
            full = True
            del pkg.__dict__["__getattr__"]
            loader.exec_module(pkg)  # the real __init__, run once, into this same module
            return getattr(pkg, name)
        raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")

    pkg.__dict__["__getattr__"] = __getattr__
    sys.modules["pyroute2"] = pkg
