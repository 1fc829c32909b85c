"""The daemon under test installed on the lab VM's own disk, as a real host has it, instead of read over 9p.

The lab VM sees the host's root filesystem and the checkout through 9p without a cache: every `stat`, `open`
and `read` of a module is a round trip to QEMU, and a start of `ipvsd run` there pays for that
(`ipvsd run`'s imports: 8.0 s over 9p, 4.6 s from the VM's tmpfs; `python -c pass`: 0.99 s against 0.43 s;
docs/benchmarks.md). A real director reads its Python and its packages from a local disk. So the benchmark and the
reliability harness copy what `ipvsd run` imports (the interpreter, its standard library, the runtime
dependencies and the package) into the VM's tmpfs once per boot, as one archive, and start the daemon from
there; the harness itself, nginx and the peers stay where they are.

    python -m tests.kernel.installed pack ARCHIVE      (host) write the archive
    installed.install(ARCHIVE) -> python               (guest) unpack it under DEST, return the interpreter
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

DEST = Path("/run/ipvsd-installed")
# Parts of the standard library a daemon never imports: tests, GUI, the packaging tools, build files.
_STDLIB_SKIP = {"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
                "unittest", "pydoc_data", "distutils"}
_PYC = re.compile(r"\.cpython-\d+\.pyc$")


def _requirements(name: str, seen: set[str]) -> None:
    """Add NAME and the distributions it requires that are installed here (an extra's are left out). Markers are
    not evaluated: a dependency for another platform or Python is not installed, and one installed all the same
    only adds files to the archive."""
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return
    try:
        reqs = md.requires(name) or []
    except md.PackageNotFoundError:
        return
    seen.add(key)
    for req in reqs:
        if "extra ==" in req:
            continue
        _requirements(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0], seen)


def _wanted(path: str) -> bool:
    """Sources and this interpreter's byte code; not optimised byte code, not tests."""
    if path.endswith(".pyc"):
        return bool(_PYC.search(path))
    return not path.endswith((".pyi", ".c", ".h"))


def _members() -> Iterator[tuple[Path, str]]:
    """(source file, name in the archive) for everything `ipvsd run` needs."""
    exe = Path(os.path.realpath(sys.executable))
    yield exe, "py/bin/python3"
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and (libdir / ldlib).exists():
        soname = sysconfig.get_config_var("INSTSONAME") or ldlib
        yield libdir / soname, f"py/lib/{soname}"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for top, dirs, files in os.walk(stdlib):
        rel = Path(top).relative_to(stdlib)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in _STDLIB_SKIP and not d.startswith("config-")]
        for f in files:
            if _wanted(f):
                yield Path(top) / f, f"py/lib/python3.{sys.version_info[1]}/{rel / f}"
    site = f"venv/lib/python3.{sys.version_info[1]}/site-packages"
    names: set[str] = set()
    _requirements("ipvsd", names)
    names.discard("ipvsd")
    for dist in md.distributions():
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key not in names:
            continue
        for entry in dist.files or []:
            src = Path(str(dist.locate_file(entry)))
            if src.is_file() and _wanted(str(entry)) and not str(entry).startswith(".."):
                yield src, f"{site}/{entry}"
    pkg = Path(__file__).resolve().parents[2] / "ipvsd"
    for top, _dirs, files in os.walk(pkg):
        for f in files:
            if _wanted(f):
                yield Path(top) / f, f"{site}/ipvsd/{Path(top).relative_to(pkg) / f}"


def pack(archive: Path) -> int:
    """Write the archive (uncompressed: the VM's emulated CPU would spend longer inflating it); its size."""
    tmp = archive.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for src, name in _members():
            tar.add(src, arcname=name, recursive=False)
    tmp.replace(archive)
    return archive.stat().st_size


def install(archive: Path, dest: Path = DEST) -> list[str]:
    """Unpack the archive under DEST (world-readable: the daemon may run as another user); the command prefix
    that runs the installed interpreter."""
    dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(dest), "--no-same-owner"], check=True)
    venv_bin = dest / "venv/bin"
    venv_bin.mkdir(mode=0o755, exist_ok=True)
    (dest / "venv/pyvenv.cfg").write_text(f"home = {dest / 'py/bin'}\ninclude-system-site-packages = false\n")
    python = venv_bin / "python3"
    if not python.exists():
        python.symlink_to(dest / "py/bin/python3")
    # The interpreter's RUNPATH names the host's library directory; LD_LIBRARY_PATH comes before RUNPATH.
    # -P: the harness starts the daemon in the checkout, whose ipvsd must not come first on sys.path.
    return ["env", f"LD_LIBRARY_PATH={dest / 'py/lib'}", str(python), "-P"]


_prefix: list[str] = []
_took: list[float] = []


def use(archive: Path) -> None:
    """Install the archive; from now on daemon_python() runs the installed interpreter."""
    t0 = time.monotonic()
    _prefix[:] = install(archive)
    _took[:] = [time.monotonic() - t0]


def describe() -> str:
    """Where the daemon's interpreter and modules are read from, for a results file's meta."""
    if not _prefix:
        return "the checkout and the host's Python, over the VM's shared filesystem (9p)"
    return f"installed on the VM's tmpfs (tests/kernel/installed.py; unpacked in {_took[0]:.1f} s)"


def daemon_python() -> list[str]:
    """The command that runs the daemon's Python: the installed one after use(), else this interpreter."""
    return list(_prefix) if _prefix else [sys.executable]


def start_costs() -> dict[str, dict[str, float]]:
    """Seconds (wall, the best of three runs: the first after the VM's boot runs cold) for the interpreter alone
    and for every import of `ipvsd run`, from the installed copy and from the checkout over 9p: where a start
    spends its time, in the run's own results."""
    out: dict[str, dict[str, float]] = {}
    for where, prefix in (("installed", daemon_python()), ("shared", [sys.executable])):
        if where == "installed" and not _prefix:
            continue
        out[where] = {}
        for what, code in (("python", "pass"), ("imports", "import ipvsd.shell.daemon, ipvsd.commands.run")):
            took = []
            for _ in range(3):
                t0 = time.monotonic()
                subprocess.run([*prefix, "-c", code], check=True, cwd="/", timeout=120)
                took.append(time.monotonic() - t0)
            out[where][what] = round(min(took), 2)
    return out


def main(argv: list[str]) -> int:
    """`pack ARCHIVE`: print the archive's size."""
    if len(argv) != 2 or argv[0] != "pack":
        print("usage: python -m tests.kernel.installed pack ARCHIVE", file=sys.stderr)
        return 2
    size = pack(Path(argv[1]))
    print(f"installed: {argv[1]}: {size / 1e6:.1f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
