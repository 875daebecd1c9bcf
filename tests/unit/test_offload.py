"""CPU-bound steps run in worker processes: a step that runs too long is killed at its timeout, and
the event loop keeps running meanwhile (counted by a ticker task, never timed)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest

from graph.offload import CpuPool, CpuStepFailed, CpuStepTimeout

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")

# The secret scanner's old pattern, which backtracks for seconds on a line of `token`s.
BACKTRACKING = re.compile(r"(?i)(?P<name>[\w.-]*(?:token)[\w.-]*)[\"']?\s*(?::=|=>|[:=])\s*(?P<q>[\"'`])x")


def backtrack(text: str) -> bool:
    return BACKTRACKING.search(text) is not None


def add(a: int, b: int) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture
async def pool() -> AsyncIterator[CpuPool]:
    pool = CpuPool(workers=2)
    yield pool
    await asyncio.to_thread(pool.close)


async def ticking(step: Awaitable[T]) -> tuple[T | BaseException, int]:
    """The step's outcome, and how often a 20 ms ticker ran on the loop while it was awaited."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        outcome: Any = await step
    except BaseException as exc:  # noqa: BLE001 - returned for the test to inspect
        outcome = exc
    finally:
        task.cancel()
    return outcome, ticks


async def test_a_step_runs_in_another_process(pool: CpuPool) -> None:
    assert await pool.run(add, 2, b=3, timeout_s=30) == 5
    assert await pool.run(pid, timeout_s=30) != os.getpid()


async def test_a_step_past_its_timeout_is_killed_and_the_loop_keeps_ticking(pool: CpuPool) -> None:
    outcome, ticks = await ticking(pool.run(backtrack, "token" * 4000, timeout_s=1.0))
    assert isinstance(outcome, CpuStepTimeout) and isinstance(outcome, TimeoutError)
    assert "backtrack did not finish within 1 s" in str(outcome)
    assert ticks >= 10  # a blocked loop ticks once, after the block
    # the killed worker is replaced; the pool goes on
    assert await asyncio.gather(*(pool.run(add, i, i, timeout_s=30) for i in range(6))) == [0, 2, 4, 6, 8, 10]


async def test_the_same_search_in_a_thread_stops_the_loop(pool: CpuPool) -> None:
    """Why a process: Python's `re` holds the GIL, so a thread does not keep the loop running."""
    line = "token" * 150
    threaded, ticks = await ticking(asyncio.to_thread(backtrack, line))
    offloaded, offloaded_ticks = await ticking(pool.run(backtrack, line, timeout_s=60))
    assert threaded is offloaded is False
    assert ticks < offloaded_ticks


async def test_cancelling_the_caller_kills_the_step(pool: CpuPool) -> None:
    task = asyncio.create_task(pool.run(backtrack, "token" * 4000, timeout_s=600))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await pool.run(add, 1, 1, timeout_s=30) == 2


async def test_a_worker_that_dies_fails_its_step_only(pool: CpuPool) -> None:
    with pytest.raises(CpuStepFailed, match="worker process died"):
        await pool.run(die, timeout_s=30)
    assert await pool.run(add, 1, 2, timeout_s=30) == 3


async def test_a_step_that_cannot_be_sent_fails_cleanly(pool: CpuPool) -> None:
    with pytest.raises(Exception) as info:
        await pool.run(add, lambda: 1, 2, timeout_s=30)
    assert not isinstance(info.value, CpuStepTimeout)
    assert await pool.run(add, 1, 2, timeout_s=30) == 3
