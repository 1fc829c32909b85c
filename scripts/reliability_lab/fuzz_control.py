"""Random control-socket requests against a real control server: a daemon on the fake kernel, in-process.

Each request is one connection: the bytes are sent, the write side shut, and every answer read until the server
hangs up. A request line must get exactly one answer, a JSON object with a boolean `ok` (an `events` request
gets its `{"ok": true}` and then the stream, which the client ends). Counted as bad: a request with no answer in
the time bound (hang), an answer that is not such an object, a connection closed before every line was answered,
an `internal error` answer (a handler raised something unexpected), and every exception the server logged with
a traceback or left to asyncio's exception handler. At the end the server must still answer a valid `status`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HANG_S = 5.0
BURST, BURST_EVERY = 16, 50  # every 50th request is a burst of 16 at once
EXAMPLES_PER_CLASS = 5
BAD = ("hang", "bad_answer", "dropped", "internal_error", "unhandled", "dead_after")
OUTCOMES = ("answered", *BAD)

CONFIG = """
[settings]
state_dir = "{tmp}/state"
maintenance_dir = "{tmp}/maint"
metrics_listen = ""
clean_stop = false

[[services]]
address = "10.2.0.240"
port = 80
scheduler = "rr"
[[services.checks]]
type = "on"
[[services.reals]]
address = "127.0.0.1"
port = 8081
[[services.reals]]
address = "127.0.0.2"
port = 8082

[[services]]
fwmark = 7
scheduler = "wlc"
[[services.checks]]
type = "off"
[[services.reals]]
address = "127.0.0.3"
port = 8083
"""

COMMANDS = ("status", "drain", "undrain", "reload", "events", "STATUS", "drain ", "", "nope", "__class__",
            "handlers")
KEYS = ("cmd", "real", "service", "until", "reason", "director")
# Values an operator's tool (or a stray program) could send in any field.
VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 65536, 10**30, -(10**30), 1e308, 1.5, float("nan"), float("inf"), float("-inf"),
    "", " ", "x" * 100_000, "\x00", "é", "\U0001f600", "\udcff", [], {}, [1, 2], {"a": 1}, [[[]]],
    "127.0.0.1", "127.0.0.1:8081", "127.0.0.2:8082", "127.0.0.3:8083", "[::1]:8083", "::1", "[::1]", "[::1", "]:80",
    "[]:", ":",
    "127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:8\u00b2", "127.0.0.1:\u0663", "host.invalid", "host.invalid:80",
    "10.2.0.240:80", "TCP 10.2.0.240:80", "tcp 10.2.0.240:80", "FWM 7", "7", "UDP 10.2.0.240:80", "10.9.9.9:80",
    "2h", "1e999", "9999999999999", str(time.time() + 3600), time.time() + 3600, time.time() + 0.01,
)


def _value(rng: random.Random) -> Any:
    return rng.choice(VALUES) if rng.random() < 0.9 else "".join(chr(rng.randrange(0, 0x800))
                                                                 for _ in range(rng.randint(0, 20)))


def _request(rng: random.Random) -> dict[str, Any]:
    req: dict[str, Any] = {"cmd": rng.choice(COMMANDS) if rng.random() < 0.9 else _value(rng)}
    for key in rng.sample(KEYS[1:], rng.randint(0, 5)):
        req[key] = _value(rng)
    if rng.random() < 0.1:
        req[rng.choice(("x", "", "\x00", "cmd ", "ok"))] = _value(rng)
    return req


def _dumps(rng: random.Random, obj: Any) -> bytes:
    # allow_nan: NaN and Infinity are what a sloppy client sends (Python's json writes them by default)
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def payload(rng: random.Random) -> bytes:
    """One connection's bytes: mostly request lines with random fields, then every kind of garbage."""
    roll = rng.random()
    if roll < 0.45:
        return _dumps(rng, _request(rng)) + b"\n"
    if roll < 0.55:  # several requests on one connection, the last maybe without its newline
        lines = b"\n".join(_dumps(rng, _request(rng)) for _ in range(rng.randint(2, 5)))
        return lines + (b"\n" if rng.random() < 0.7 else b"")
    if roll < 0.70:  # a valid line mutated at the byte level
        data = bytearray(_dumps(rng, _request(rng)))
        for _ in range(rng.randint(1, 4)):
            op, pos = rng.randrange(4), rng.randrange(len(data) + 1)
            if op == 0:
                del data[pos:pos + rng.randint(1, 10)]
            elif op == 1:
                data[pos:pos] = rng.randbytes(rng.randint(1, 6))
            elif op == 2 and pos < len(data):
                data[pos] ^= 1 << rng.randrange(8)
            else:
                data = data[:pos]  # truncated
        return bytes(data) + (b"\n" if rng.random() < 0.8 else b"")
    if roll < 0.78:  # binary
        return rng.randbytes(rng.randint(0, 4000))
    if roll < 0.86:  # deeply nested
        depth = rng.choice((10, 1000, 100_000))
        inner = rng.choice((("[" * depth + "]" * depth), ('{"a":' * depth + "1" + "}" * depth), "[" * depth))
        return (rng.choice(('{"cmd": "status", "x": ', '{"cmd": ', "")) + inner
                + rng.choice(("}", ""))).encode() + b"\n"
    if roll < 0.92:  # huge: a long line, a huge number, many keys
        kind = rng.randrange(3)
        if kind == 0:
            return b'{"cmd": "status", "x": "' + b"a" * rng.choice((1 << 16, 1 << 22)) + b'"}\n'
        if kind == 1:
            return b'{"cmd": "drain", "until": ' + b"9" * rng.choice((400, 5000, 100_000)) + b"}\n"
        return _dumps(rng, {"cmd": "status", **{f"k{i}": i for i in range(50_000)}}) + b"\n"
    if roll < 0.96:  # JSON that is not an object
        return _dumps(rng, rng.choice(([], [{"cmd": "status"}], "status", 1, None, True, 1e400))) + b"\n"
    return rng.choice((b"\n", b"\r\n", b"\n\n\n", b" \n", b"", b"\x00\n", b"\xff\xfe{}\n", b"NaN\n",
                       b'{"cmd": "status"}\r\n', b'{"cmd": "status", "cmd": "drain"}\n', b"\xef\xbb\xbf{}\n"))


def _lines(data: bytes) -> list[bytes]:
    """The request lines the server reads (StreamReader.readline: a last fragment without newline counts)."""
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p + b"\n" for p in parts]


def _expected(data: bytes) -> tuple[int, bool]:
    """How many answers the request lines get, and whether the last starts an event stream."""
    lines = _lines(data)
    for n, raw in enumerate(lines, 1):
        try:
            req = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(req, dict) and req.get("cmd") == "events":
            return n, True
    return len(lines), False


def _answer_problem(raw: bytes) -> str:
    try:
        msg = json.loads(raw)
    except ValueError as e:
        return f"not JSON: {e}"
    if not isinstance(msg, dict) or not isinstance(msg.get("ok"), bool):
        return "not an object with a boolean ok"
    if not msg["ok"] and not isinstance(msg.get("error"), str):
        return "a refusal without an error text"
    if not msg["ok"] and str(msg["error"]).startswith("internal error"):
        return "internal error"
    return ""


async def exchange(sock: str, data: bytes) -> tuple[str, str]:
    """Send one connection's bytes; (outcome, detail)."""
    from ipvsd.shell.control import LIMIT

    want, streams = _expected(data)
    reader, writer = await asyncio.open_unix_connection(sock, limit=LIMIT)
    answers: list[bytes] = []
    try:
        async with asyncio.timeout(HANG_S):
            writer.write(data)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            while len(answers) < want or not streams:
                raw = await reader.readline()
                if not raw:
                    break
                answers.append(raw)
    except TimeoutError:
        return "hang", f"{len(answers)} of {want} answer(s) in {HANG_S:g}s"
    except ConnectionError as e:
        return "dropped", f"{type(e).__name__} after {len(answers)} of {want} answer(s)"
    finally:
        writer.close()
    for raw in answers[:want]:
        problem = _answer_problem(raw)
        if problem == "internal error":
            return "internal_error", raw[:500].decode("utf-8", "replace")
        if problem:
            return "bad_answer", f"{problem}: {raw[:300]!r}"
    if len(answers) < want:
        return "dropped", f"closed after {len(answers)} of {want} answer(s)"
    if len(answers) > want and not streams:
        return "bad_answer", f"{len(answers)} answers to {want} line(s)"
    return "answered", ""


class _Tracebacks(logging.Handler):
    """Every record logged with a traceback: an exception the server did not expect."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.seen.append(f"{record.name}: {record.getMessage()}: {record.exc_info[1]!r}"[:1000])


async def _fuzz(n: int, seed: int, deadline: float, examples_dir: Path | None) -> dict[str, Any]:
    from ipvsd import config as configmod
    from ipvsd.kernel.fake import FakeKernel
    from ipvsd.shell import resolver
    from ipvsd.shell.daemon import Daemon, Options

    def no_dns(name: str, family: int) -> str:
        # A fuzzed `real` is often a host name: resolving it would send DNS queries, and the fuzz sends nothing.
        raise OSError(f"{name}: not resolved (the fuzz makes no DNS queries)")

    counts: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    caught = _Tracebacks()
    loop_errors: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(repr(ctx)[:1000]))
    watched = [logging.getLogger(name) for name in ("ipvsd", "asyncio")]
    for lg in watched:
        lg.addHandler(caught)
    real_lookup = resolver.getaddrinfo
    resolver.getaddrinfo = no_dns
    t0 = time.monotonic()
    done = attributed = 0
    try:
        with tempfile.TemporaryDirectory(prefix="ipvsd-fuzz-control-") as tmp:
            path = Path(tmp) / "ipvsd.toml"
            path.write_text(CONFIG.format(tmp=tmp))
            sock = str(Path(tmp) / "control.sock")
            config, _ = configmod.load(str(path))
            kernel = FakeKernel()
            daemon = Daemon(Options(config_path=str(path), watch=False, socket=sock, metrics_listen=""), config,
                            lambda: kernel, lookup=no_dns)
            task = asyncio.create_task(daemon.run())
            while daemon.control is None:
                if task.done():
                    raise RuntimeError(f"the daemon ended before listening: {task}")
                await asyncio.sleep(0.01)
            i = 0
            while i < n and time.monotonic() < deadline:
                # One request at a time, and now and then a burst of them at once: concurrent drains and
                # reloads share the daemon's passes.
                batch = list(range(i, min(n, i + (BURST if i % BURST_EVERY == BURST_EVERY - 1 else 1))))
                datas = [payload(random.Random(f"{seed}:control:{j}")) for j in batch]
                before = len(caught.seen) + len(loop_errors)
                results = await asyncio.gather(*(exchange(sock, d) for d in datas))
                await asyncio.sleep(0)  # let the server's side of the connection finish before counting its errors
                if len(caught.seen) + len(loop_errors) > before:
                    attributed = len(caught.seen) + len(loop_errors)
                    news = "; ".join((caught.seen + loop_errors)[before:])[:2000]
                    answered = [k for k, (o, _) in enumerate(results) if o == "answered"]
                    if answered:  # one of the batch's requests did it: which one, a replay of each tells
                        results[answered[0]] = ("unhandled", news)
                    else:
                        counts["unhandled"] += 1
                        _keep(examples, "unhandled", batch[0], datas[0], news, examples_dir)
                for j, data, (outcome, detail) in zip(batch, datas, results, strict=True):
                    counts[outcome] += 1
                    if outcome != "answered":
                        _keep(examples, outcome, j, data, detail, examples_dir)
                done += len(batch)
                i += len(batch)
            try:
                status = await asyncio.wait_for(exchange(sock, b'{"cmd": "status"}\n'), HANG_S)
            except (OSError, TimeoutError) as e:
                status = ("dead_after", repr(e))
            if status[0] != "answered":
                counts["dead_after"] += 1
                _keep(examples, "dead_after", n, b'{"cmd": "status"}\n', status[1], examples_dir)
            daemon.stopping.set()
            code = await asyncio.wait_for(task, 30)
            late = (caught.seen + loop_errors)[attributed:]  # logged at no request's time: at the stop, say
            if late:
                counts["unhandled"] += len(late)
                _keep(examples, "unhandled", n, b"", "; ".join(late)[:2000], examples_dir)
    finally:
        resolver.getaddrinfo = real_lookup
        for lg in watched:
            lg.removeHandler(caught)
    return {"requests": done, **{o: counts[o] for o in OUTCOMES}, "not_run": n - done,
            "logged_tracebacks": len(caught.seen), "loop_errors": len(loop_errors), "exit": code,
            "seconds": round(time.monotonic() - t0, 1), "examples": examples}


def _keep(examples: dict[str, list[dict[str, Any]]], outcome: str, i: int, data: bytes, detail: str,
          examples_dir: Path | None) -> None:
    kept = examples.setdefault(outcome, [])
    if len(kept) >= EXAMPLES_PER_CLASS:
        return
    example: dict[str, Any] = {"request": i, "detail": detail, "head": data[:200].decode("utf-8", "backslashreplace")}
    if examples_dir is not None:
        examples_dir.mkdir(parents=True, exist_ok=True)
        saved = examples_dir / f"{outcome}-{i}.bin"
        saved.write_bytes(data)
        example["file"] = str(saved)
    kept.append(example)


def fuzz_control(n: int, seed: int, deadline: float, examples_dir: Path | None = None) -> dict[str, Any]:
    """`n` random requests, until done or `deadline` (a time.monotonic() value); the counts and examples."""
    return asyncio.run(_fuzz(n, seed, deadline, examples_dir))
