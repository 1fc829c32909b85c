"""Host names in a configuration (reals, check addresses, fallbacks), resolved through the system resolver.

Blocking (getaddrinfo): the daemon calls `resolve` in a thread. A name that fails keeps its last good address;
a name that never resolved is left out, and the probe plan marks what it keeps out of the table (down, `dns`).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import operator
import socket
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, ParamSpec, TypeVar

from ipvsd.config.schema import Config
from ipvsd.core.probes import ProbePlan, service_names

log = logging.getLogger("ipvsd.resolver")
_P = ParamSpec("_P")
_T = TypeVar("_T")
Lookup = Callable[[str, int], str]  # (name, family) -> address; raises OSError when the name does not resolve


def getaddrinfo(name: str, family: int) -> str:
    return str(socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)[0][4][0])


@dataclass(frozen=True)
class Resolution:
    """Every name's address (fresh or kept), and the names that failed this time with why."""

    addresses: dict[str, str]
    failed: dict[str, str] = field(default_factory=dict)


class _Named(NamedTuple):
    """A service's names worked out afresh, standing where its plan part would be in `names_of`."""

    names: tuple[tuple[str, int], ...]


def names_of(config: Config, plan: ProbePlan | None = None) -> dict[str, int]:
    """Every host name the configuration uses, with the address family its service needs; a service `plan` (of
    the running configuration) already planned, the same object, is not looked through again."""
    out: dict[str, int] = {}
    parts = plan.parts if plan is not None else {}
    services = config.services
    # A part is found by id() only for its own service (it holds the model, so the id is not another's). The
    # services with none (all at a start, those a reload changed) have their names worked out; then only the
    # services that name a host are looked through, in order (found and filtered in C).
    found: list[Any] = list(map(parts.get, map(id, services)))
    for i in itertools.compress(range(len(found)), map(operator.is_, found, itertools.repeat(None))):
        found[i] = _Named(service_names(services[i]))
    for names in filter(None, map(operator.attrgetter("names"), found)):
        for name, family in names:
            out.setdefault(name, family)
    return out


def resolve(names: Mapping[str, int], previous: Mapping[str, str], lookup: Lookup = getaddrinfo,
            quiet: Collection[str] = ()) -> Resolution:
    """Resolve every name; a failure keeps the previous address when there is one (and says so, unless the name
    is in `quiet`: it failed last time too, and a DNS outage must not log a line per name per interval)."""
    addresses: dict[str, str] = {}
    failed: dict[str, str] = {}
    for name, family in names.items():
        try:
            addresses[name] = lookup(name, family)
            continue
        except (OSError, UnicodeError) as e:
            failed[name] = str(e)
        if name in quiet:
            if name in previous:
                addresses[name] = previous[name]
        elif name in previous:
            addresses[name] = previous[name]
            log.warning("cannot resolve %s (%s); keeping its last address %s", name, failed[name], previous[name])
        else:
            log.warning("cannot resolve %s (%s); what needs it is down (reason dns) until it does", name,
                        failed[name])
    return Resolution(addresses, failed)


class DaemonThreads(concurrent.futures.Executor):
    """Runs each call in a daemon thread of its own, so a lookup stuck in a resolver timeout never delays a stop
    (a pool's threads are joined at exit; systemd would kill the daemon first)."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> concurrent.futures.Future[_T]:
        fut: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def work() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as e:  # handed to the awaiting task, as a pool would
                fut.set_exception(e)

        threading.Thread(target=work, name="ipvsd-resolve", daemon=True).start()
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass  # nothing to join: the threads are daemons
