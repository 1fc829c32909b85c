"""Run a function as nobody, without capabilities, in a forked child: what an unprivileged ipvsd would meet."""

from __future__ import annotations

import os
import pwd
import signal
from collections.abc import Callable

import pytest


def as_nobody(fn: Callable[[], str], *, bound: int = 60) -> str:
    """Return what `fn` returns when called as nobody (uid, gid and groups dropped: no capability is left);
    the child is killed after `bound` seconds (a daemon that should have refused to start, say).

    Forked, not executed: nothing is imported as nobody, so it works wherever the checkout and the interpreter
    are (a /root or mktemp -d checkout that nobody cannot read). An exception becomes `raised: Type: text`.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, call fn, send its answer, never return into pytest
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)  # from root to another uid: the kernel clears every capability
            signal.alarm(bound)
            try:
                out = fn()
            except Exception as e:
                out = f"raised: {type(e).__name__}: {e}"
            os.write(w, out.encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code != -signal.SIGALRM, f"the call as nobody did not return within {bound}s"
    assert code == 0, "the child failed before it could answer"
    return b"".join(chunks).decode()
