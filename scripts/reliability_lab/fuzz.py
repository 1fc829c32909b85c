"""Reliability scenario 7, fuzzed input: mutated configurations through `ipvsd check`'s loader, random control requests.

`python -m scripts.reliability_lab.fuzz --n 10000 --control 5000 --out fuzz.json` mutates the real samples (etc/ and
the fixture corpus) and loads each case in-process, as `ipvsd check` does (sniff, load, the summary it prints, the
JSON it dumps, the checks against this host), in worker processes: a case over the time bound is killed and counted
as a hang instead of stopping the run. Each case ends as one of: accepted, located (a ConfigError naming the file
and a line or a key, in one line), unlocated, traceback (any other exception), hang. Then it talks to a real control
server (a daemon on the fake kernel, on a Unix socket in a temporary directory) with random and mutated requests.

Nothing here sends a packet: configurations are only validated, never run, probed or planned (the samples name
addresses that are not ours), and the control daemon's reals are loopback addresses with static checks.
Up to 5 inputs of each bad class are saved next to --out (DIR `<out>.cases/`) to reproduce a defect.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from ipvsd.config import Format
from scripts.reliability_lab import fuzz_mutate
from scripts.reliability_lab.fuzz_mutate import CASE_NAME, INCLUDE_DIRS, Sample

HANG_S = 5.0  # a load of a file of a few KB that takes longer than this is a hang (they take milliseconds)
WORKER_MEMORY = 2 << 30  # a case that wants more is a MemoryError (a traceback), not the machine's swap
EXAMPLES_PER_CLASS = 5
BAD = ("unlocated", "traceback", "hang")
OUTCOMES = ("accepted", "located", *BAD)
Case = tuple[Format, int, bytes, list[str]]  # (format, index, the file's bytes, the mutations applied)


# --- one case, in a worker -------------------------------------------------------------------------------------


def check_file(path: str) -> tuple[str, str]:
    """Load `path` as `ipvsd check` does; (outcome, detail). The host checks only read this host's interfaces
    and routing tables (netlink to the local kernel): they send nothing."""
    from ipvsd.commands.check import host_problems, summary
    from ipvsd.config import ConfigErrors, load, place, sniff
    from ipvsd.errors import ConfigError

    try:
        fmt = sniff(path)
        config, _ = load(path, fmt)
        summary(config)
        config.model_dump_json()
        for _, key, message in host_problems(config):
            at = place(path, fmt, key)
            err = ConfigError(message, path=at.path, line=at.line, key=at.key)
            if _unlocated(err, path):  # accepted by the loader, but what `check` says of this host is unlocated
                return "unlocated", f"host check: {_unlocated(err, path)}: {str(err)[:500]!r}"
    except ConfigError as e:
        errors = e.errors if isinstance(e, ConfigErrors) else [e]
        for err in errors:
            problem = _unlocated(err, path)
            if problem:
                return "unlocated", f"{problem}: {str(err)[:500]!r}"
        return "located", str(errors[0])[:300] if errors else ""
    except BaseException as e:  # a SystemExit or RecursionError from a reader is a defect too
        if isinstance(e, KeyboardInterrupt):
            raise
        return "traceback", "".join(traceback.format_exception(e))[-3000:]
    return "accepted", ""


def _unlocated(err: Any, path: str) -> str:
    """Why an error does not tell an operator where to look ("" when it does)."""
    if not err.path or err.path == "<config>":
        return "no file"
    if err.line is None and not err.key:
        return "no line or key"
    if "\n" in str(err):
        return "more than one line"
    return ""


def _worker(conn: Connection, workdir: str) -> None:
    """Serve cases until the pipe closes: write the bytes under the format's name, check, answer."""
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    os.chdir(workdir)
    sys.setrecursionlimit(1000)  # the daemon's limit: a fork inherits whatever the parent had
    while True:
        try:
            case = conn.recv()
        except EOFError:
            return
        if case is None:  # the end (EOF may never come: a later worker's fork holds this pipe's other end too)
            return
        name, data = case
        path = os.path.join(workdir, name)
        with open(path, "wb") as f:
            f.write(data)
        start = time.perf_counter()
        outcome, detail = check_file(path)
        conn.send((outcome, detail, time.perf_counter() - start))


@dataclass
class _Slot:
    """A worker process and the case it is busy with."""

    proc: BaseProcess
    conn: Connection
    workdir: str
    case: Case | None = None
    started: float = 0.0


@dataclass
class ConfigFuzz:
    """Counts and examples of the configuration cases."""

    examples_dir: Path | None
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    examples: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    slowest: dict[str, tuple[float, int]] = field(default_factory=dict)  # (seconds, case) of the slowest case
    mutations: Counter[str] = field(default_factory=Counter)

    def record(self, fmt: Format, index: int, data: bytes, steps: list[str], outcome: str, detail: str,
               seconds: float) -> None:
        self.counts.setdefault(fmt, Counter())[outcome] += 1
        self.slowest[fmt] = max(self.slowest.get(fmt, (0.0, -1)), (seconds, index))
        self.mutations.update(steps)
        if outcome not in BAD:
            return
        kept = self.examples.setdefault(fmt, {}).setdefault(outcome, [])
        if len(kept) >= EXAMPLES_PER_CLASS:
            return
        example: dict[str, Any] = {"case": index, "mutations": steps, "detail": detail, "head": data[:200].decode(
            "utf-8", "backslashreplace")}
        if self.examples_dir is not None:
            self.examples_dir.mkdir(parents=True, exist_ok=True)
            saved = self.examples_dir / f"{fmt}-{outcome}-{index}-{CASE_NAME[fmt]}"
            saved.write_bytes(data)
            example["file"] = str(saved)
        kept.append(example)


def _spawn(ctx: Any, base: str, n: int) -> _Slot:
    workdir = os.path.join(base, f"w{n}")
    os.makedirs(workdir, exist_ok=True)
    for name, src in INCLUDE_DIRS.items():
        if not os.path.exists(os.path.join(workdir, name)):
            shutil.copytree(src, os.path.join(workdir, name))
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(child, workdir), daemon=True)
    proc.start()
    child.close()
    return _Slot(proc, parent, workdir)


def _case(samples: list[Sample], fmt: Format, i: int, seed: int) -> Case:
    """Case `i` of a format: it depends only on the seed, the format and i (the same seed gives the same inputs)."""
    rng = random.Random(f"{seed}:{fmt}:{i}")
    text, steps = fuzz_mutate.mutate(rng, rng.choice([s for s in samples if s.format == fmt]), samples)
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:  # raw bytes too: not every file on a disk is UTF-8
        pos = rng.randrange(len(data) + 1)
        data = data[:pos] + rng.randbytes(rng.randint(1, 8)) + data[pos:]
        steps = [*steps, "raw_bytes"]
    return fmt, i, data, steps


def _cases(n_per_format: int, seed: int) -> list[Case]:
    """Every case, formats interleaved so that a deadline cuts each format alike."""
    samples = fuzz_mutate.corpus()
    return [_case(samples, fmt, i, seed) for i in range(n_per_format) for fmt in CASE_NAME]


def replay(fmt: Format, index: int, seed: int, directory: Path) -> Path:
    """Write case `index` of `fmt` (as a run with `seed` made it) into `directory`, under the name it is loaded by;
    `ipvsd check -c` on it shows what the run saw (an include resolves only next to copies of INCLUDE_DIRS)."""
    _, _, data, _ = _case(fuzz_mutate.corpus(), fmt, index, seed)
    path = directory / CASE_NAME[fmt]
    path.write_bytes(data)
    return path


def fuzz_configs(n_per_format: int, seed: int, deadline: float, examples_dir: Path | None,
                 workers: int = 0) -> dict[str, Any]:
    """Run the configuration cases on `workers` processes (default: one per CPU) until done or `deadline`
    (a time.monotonic() value)."""
    result = ConfigFuzz(examples_dir)
    todo = _cases(n_per_format, seed)
    todo.reverse()
    ctx = multiprocessing.get_context("fork")  # the parent has loaded ipvsd: a fork starts in milliseconds
    base = tempfile.mkdtemp(prefix="ipvsd-fuzz-")
    slots = [_spawn(ctx, base, n) for n in range(workers or os.cpu_count() or 1)]
    start = time.monotonic()
    try:
        while True:
            for slot in slots:
                if slot.case is None and todo and time.monotonic() < deadline:
                    slot.case = todo.pop()
                    slot.started = time.monotonic()
                    fmt, _, data, _ = slot.case
                    slot.conn.send((CASE_NAME[fmt], data))
            busy = [s for s in slots if s.case is not None]
            if not busy:
                break
            wait = max(0.0, min(s.started + HANG_S for s in busy) - time.monotonic())
            ready = multiprocessing.connection.wait([s.conn for s in busy], timeout=wait)
            for n, slot in enumerate(slots):
                if slot.case is None:
                    continue
                fmt, index, data, steps = slot.case
                if slot.conn in ready:
                    try:
                        outcome, detail, seconds = slot.conn.recv()
                    except EOFError:  # the worker died (a crash in C, the OOM killer): the case did it
                        outcome, detail, seconds = "traceback", f"worker died: exit {slot.proc.exitcode}", 0.0
                        slots[n] = _respawn(ctx, base, slot, n)
                    slot.case = None
                elif time.monotonic() - slot.started > HANG_S:
                    outcome, detail, seconds = "hang", f"no answer in {HANG_S:g}s", time.monotonic() - slot.started
                    slots[n] = _respawn(ctx, base, slot, n)
                else:
                    continue
                result.record(fmt, index, data, steps, outcome, detail, seconds)
    finally:
        for slot in slots:
            with contextlib.suppress(OSError):
                slot.conn.send(None)
            slot.conn.close()
            slot.proc.join(2)
            if slot.proc.is_alive():
                slot.proc.kill()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "per_format": {fmt: {o: result.counts.get(fmt, Counter())[o] for o in OUTCOMES}
                       | {"cases": sum(result.counts.get(fmt, Counter()).values()),
                          "slowest_s": round(result.slowest.get(fmt, (0.0, -1))[0], 3),
                          "slowest_case": result.slowest.get(fmt, (0.0, -1))[1]} for fmt in CASE_NAME},
        "examples": result.examples, "mutations": dict(result.mutations), "not_run": len(todo),
        "seconds": round(time.monotonic() - start, 1),
    }


def _respawn(ctx: Any, base: str, slot: _Slot, n: int) -> _Slot:
    slot.proc.kill()
    slot.proc.join()
    slot.conn.close()
    return _spawn(ctx, base, n)


# --- the whole scenario ----------------------------------------------------------------------------------------


def run(n_per_format: int, control_requests: int, seed: int, deadline_s: float, *,
        examples_dir: Path | None = None, workers: int = 0) -> dict[str, Any]:
    """Both halves within `deadline_s` seconds (the configurations get 80% of it, the control socket the rest and
    whatever the configurations left); the figures, the verdict (`bad` is the sum of every bad class) and examples."""
    from scripts.reliability_lab import fuzz_control

    t0 = time.monotonic()
    configs = fuzz_configs(n_per_format, seed, t0 + 0.8 * deadline_s, examples_dir, workers)
    ctl = fuzz_control.fuzz_control(control_requests, seed, t0 + deadline_s,
                                    examples_dir / "control" if examples_dir else None)
    bad = sum(c[o] for c in configs["per_format"].values() for o in BAD) + sum(ctl[o] for o in fuzz_control.BAD)
    return {"seed": seed, "configs": configs, "control": ctl, "bad": bad, "complete":
            configs["not_run"] == 0 and ctl["not_run"] == 0, "seconds": round(time.monotonic() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.reliability_lab.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="mutated configurations per format (default 10000)")
    p.add_argument("--control", type=int, default=5_000, help="random control-socket requests (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline", type=float, default=1800.0, help="seconds for the whole run (default 1800)")
    p.add_argument("--workers", type=int, default=0, help="processes loading configurations (default: CPUs)")
    p.add_argument("--out", metavar="FILE.json", help="write the figures here, and bad inputs to FILE.cases/")
    p.add_argument("--replay", metavar="FORMAT:CASE", help="only write that case (of --seed) to the current "
                   "directory, to reproduce it")
    args = p.parse_args(argv)
    if args.replay:
        fmt, _, index = args.replay.partition(":")
        if fmt not in CASE_NAME or not index.isdigit():
            p.error(f"--replay {args.replay!r}: expected FORMAT:CASE, FORMAT one of {', '.join(CASE_NAME)}")
        print(replay(fmt, int(index), args.seed, Path.cwd()))
        return 0
    out = Path(args.out) if args.out else None
    examples = out.with_suffix(".cases") if out else None
    if examples is not None:
        shutil.rmtree(examples, ignore_errors=True)
    result = run(args.n, args.control, args.seed, args.deadline, examples_dir=examples, workers=args.workers)
    text = json.dumps(result, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    for fmt, c in result["configs"]["per_format"].items():
        print(f"{fmt:11} " + " ".join(f"{k} {v}" for k, v in c.items()))
    ctl = result["control"]
    print("control     " + " ".join(f"{k} {v}" for k, v in ctl.items() if not isinstance(v, dict | list)))
    print(f"bad {result['bad']}, complete {result['complete']}, {result['seconds']}s")
    return 0 if result["bad"] == 0 and result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
