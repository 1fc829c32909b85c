"""A steady stream of HTTP requests through the VIP from the client namespace, each on a new connection.

One thread, a fixed cadence (no bursts to catch up), every outcome kept with its monotonic time, so a scenario
can count what failed inside any window: refused (no service), reset (connection broken), timeout, bad (a
reply that is not our 200 page).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.kernel.lab import RECEIVE
from tests.netns import join_netns

OUTCOMES = ("ok", "refused", "reset", "timeout", "bad", "error")


def classify(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "error"


def one_request(addr: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.sendall(b"GET /index.html HTTP/1.0\r\nHost: vip\r\n\r\n")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
    except OSError as e:
        return classify(e)
    reply = b"".join(chunks)
    if not reply:
        return "reset"  # closed without a byte: the connection was cut
    return "ok" if reply.startswith(b"HTTP/1.1 200") and RECEIVE.encode() in reply else "bad"


@dataclass
class Traffic:
    """Requests to addr:port from namespace `ns`, `rate` per second, until stopped."""

    ns: str
    addr: str
    port: int = 80
    rate: float = 25.0
    timeout: float = 2.0
    results: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name=f"traffic-{self.ns}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(self.timeout + 5)

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        join_netns(self.ns)
        step = 1.0 / self.rate
        due = time.monotonic()
        while not self._stop.is_set():
            t = time.monotonic()
            self.results.append((t, one_request(self.addr, self.port, self.timeout)))
            due += step
            now = time.monotonic()
            if due < now:
                due = now  # fell behind (emulated CPU): re-base rather than burst
            self._stop.wait(due - now)

    def between(self, t0: float, t1: float) -> dict[str, int]:
        """Outcome counts of the requests started in [t0, t1)."""
        c = Counter(o for t, o in list(self.results) if t0 <= t < t1)
        return {o: c.get(o, 0) for o in OUTCOMES}
