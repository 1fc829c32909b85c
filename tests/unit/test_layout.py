"""The package's shape: no import circle, and the pure core imports nothing of the shell or of I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import ipvsd

PACKAGE = Path(ipvsd.__file__).parent
# What a core module may not import: the shell, the kernel adapter, probes that do I/O, and the I/O stdlib.
CORE_FORBIDDEN = ("ipvsd.shell", "ipvsd.kernel", "ipvsd.commands", "ipvsd.checks.", "asyncio", "socket", "os",
                  "subprocess", "time")
CORE_ALLOWED = ("ipvsd.checks.base",)  # the probe's vocabulary: targets, results, kinds


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (lazy imports in functions count)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(p) if m in files and m != name} for name, p in files.items()}


def test_no_import_circle() -> None:
    g = graph()
    # A module's package __init__ is imported with it; an edge to a package is not a circle through its modules.
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in g.items()}
    done: set[str] = set()
    path: list[str] = []

    def visit(m: str) -> None:
        if m in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(m):], m]))
        if m in done:
            return
        path.append(m)
        for d in sorted(edges[m]):
            visit(d)
        path.pop()
        done.add(m)

    for m in sorted(edges):
        visit(m)


def test_core_is_pure() -> None:
    for path in (PACKAGE / "core").rglob("*.py"):
        for m in imports(path):
            bad = [f for f in CORE_FORBIDDEN if (m == f.rstrip(".") or m.startswith(f if f.endswith(".") else f + "."))
                   and not m.startswith(CORE_ALLOWED)]
            assert not bad, f"{module_name(path)} imports {m}"
