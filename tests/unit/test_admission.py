"""The adaptive in-flight limit: shrinks when the loop is late, grows back while probes wait, never leaks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ipvsd.shell.admission import FLOOR, LATE_HIGH, LATE_LOW, Admission


def test_a_late_loop_halves_what_is_in_flight_down_to_the_floor() -> None:
    a = Admission(256)
    a.in_flight = 100
    a.observe(LATE_HIGH * 2)
    assert a.limit == 50 and a.shrinks == 1
    for _ in range(20):
        a.observe(1.0)
    assert a.limit == FLOOR
    assert a.shrinks == 5  # 50, 25, 12.5, 6.25, 4; at the floor it no longer counts


async def test_an_on_time_loop_grows_the_limit_only_while_probes_wait() -> None:
    a = Admission(64)
    a.limit, a.in_flight = 8.0, 8
    a.observe(0.0)
    assert a.limit == 8.0  # nobody waiting: no reason to grow
    waiter = asyncio.create_task(a.acquire())
    await asyncio.sleep(0)
    a.observe((LATE_LOW + LATE_HIGH) / 2)  # in between: hold
    assert a.limit == 8.0 and a.waiting == 1
    a.observe(LATE_LOW / 2)
    assert a.limit == 9.0 and a.waiting == 0 and a.in_flight == 9  # grown, and the waiter admitted
    await waiter
    for _ in range(100):
        a._waiters.append(asyncio.get_running_loop().create_future())
        a.observe(0.0)
    assert a.limit == 64


async def test_admits_up_to_the_limit_then_in_order_and_cancellation_does_not_leak() -> None:
    a = Admission(2)
    await a.acquire()
    await a.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        async with a:
            order.append(i)
            await asyncio.sleep(0)

    waiters = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert a.waiting == 3 and a.in_flight == 2
    waiters[1].cancel()
    a.release()
    a.release()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert order == [0, 2]
    assert a.in_flight == 0 and a.waiting == 0


async def test_a_waiter_admitted_then_cancelled_gives_its_place_back() -> None:
    a = Admission(1)
    await a.acquire()
    t = asyncio.create_task(a.acquire())
    await asyncio.sleep(0)
    a.release()  # admits t (in_flight stays 1)...
    t.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await t
    assert a.in_flight == 0


async def test_queued_starts_and_waiting_tasks_are_admitted_in_arrival_order() -> None:
    a = Admission(1)
    order: list[str] = []

    def start(name: str, take: bool = True) -> Callable[[], bool]:
        return lambda: order.append(name) is None and take

    a.queue(start("first"))  # a place is free: called at once
    assert order == ["first"] and a.in_flight == 1
    second = asyncio.create_task(a.acquire())
    await asyncio.sleep(0)
    a.queue(start("stopped", take=False))  # gives its place back when its turn comes
    a.queue(start("fourth"))
    assert a.waiting == 3
    a.release()  # the task, which came first
    await second
    assert order == ["first"] and a.in_flight == 1
    a.release()
    assert order == ["first", "stopped", "fourth"] and a.in_flight == 1 and a.waiting == 0
    a.release()
    assert a.in_flight == 0
