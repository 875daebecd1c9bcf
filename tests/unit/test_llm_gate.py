"""The global LLM cap from a replica's side: calls waiting for a slot queue up (the review started
first, first), and only the first asks the database, so a freed slot costs one query per replica,
not one per waiting call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.llm_gate import LLMGate
from actors.meter import JobMeter
from graph.llm import TokenUsage
from prreview.errors import JobCancelled


class SlotTable:
    """The two statements the gate uses, on `slots` rows in memory; every query is recorded."""

    def __init__(self, slots: int) -> None:
        self.free = list(range(1, slots + 1))
        self.queries: list[str] = []  # job ids of begin_llm_call, in order
        self.cancelled: set[str] = set()
        self.calls = 0

    async def begin_llm_call(self, *, job_id: str, owner: str, holder: str, gated: bool,
                             hold_s: float) -> dict[str, Any]:
        self.queries.append(job_id)
        await asyncio.sleep(0)  # a round trip
        if job_id in self.cancelled:
            return {"allowed": False, "slot": None, "usage": None}
        if gated and not self.free:
            return {"allowed": True, "slot": None, "usage": None}
        self.calls += 1
        return {"allowed": True, "slot": self.free.pop(0) if gated else None,
                "usage": {"llm_calls": self.calls, "prompt_tokens": 0, "completion_tokens": 0}}

    async def release_llm_slot(self, slot: int, *, holder: str) -> None:
        self.free.append(slot)

    async def add_tokens(self, job_id: str, *, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {"llm_calls": self.calls, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}


def gate(table: SlotTable, slots: int | None = 1) -> LLMGate:
    return LLMGate(table, "replica-a", slots, hold_s=60)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_only_the_first_waiting_call_asks_the_database() -> None:
    table = SlotTable(slots=1)
    llm_gate = gate(table)
    holder = await llm_gate.begin("job-0")
    waiters = [asyncio.create_task(llm_gate.begin(f"job-{i}")) for i in range(1, 11)]
    await settle()
    assert table.queries == ["job-0", "job-1"]  # ten calls wait; one of them asked
    assert llm_gate.freed.waiting == 10

    llm_gate.freed.notify()  # a slot was freed on another replica, and taken there: nothing is free
    await settle()
    assert table.queries[2:] == ["job-1"]

    await llm_gate.release(holder.slot)
    llm_gate.freed.notify()  # the NOTIFY of our own release
    await settle()
    assert waiters[0].done() and not any(w.done() for w in waiters[1:])
    # The first got the slot, and the next one asked at once (another slot might have been free).
    assert table.queries[3:] == ["job-1", "job-2"]
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_waiting_calls_get_slots_first_come_first_served() -> None:
    table = SlotTable(slots=1)
    llm_gate = gate(table)
    first = await llm_gate.begin("a")
    order: list[str] = []

    async def call(job_id: str) -> None:
        begun = await llm_gate.begin(job_id)
        order.append(job_id)
        await llm_gate.release(begun.slot)
        llm_gate.freed.notify()

    tasks = [asyncio.create_task(call(job_id)) for job_id in ("b", "c", "d")]
    await settle()
    await llm_gate.release(first.slot)
    llm_gate.freed.notify()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["b", "c", "d"]


async def test_the_review_that_started_first_gets_the_next_slot() -> None:
    """A review's summary does not wait behind the groups of reviews started after it."""
    table = SlotTable(slots=1)
    llm_gate = gate(table)
    first = await llm_gate.begin("old", priority=1.0)
    order: list[str] = []

    async def call(job_id: str, priority: float) -> None:
        begun = await llm_gate.begin(job_id, priority=priority)
        order.append(job_id)
        await llm_gate.release(begun.slot)
        llm_gate.freed.notify()

    tasks = [asyncio.create_task(call(f"new-{i}", 2.0)) for i in range(3)]
    await settle()
    tasks.append(asyncio.create_task(call("old", 1.0)))  # the old review's summary, asked last
    await settle()
    await llm_gate.release(first.slot)
    llm_gate.freed.notify()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == ["old", "new-0", "new-1", "new-2"]


async def test_a_cancelled_waiter_hands_its_turn_on() -> None:
    table = SlotTable(slots=1)
    llm_gate = gate(table)
    await llm_gate.begin("a")
    first = asyncio.create_task(llm_gate.begin("b"))
    second = asyncio.create_task(llm_gate.begin("c"))
    await settle()
    first.cancel()  # its job was cancelled: runner.stop cancels the task
    await settle()
    assert table.queries[-1] == "c" and llm_gate.freed.waiting == 1
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    assert llm_gate.freed.waiting == 0


async def test_a_job_that_may_not_spend_is_refused_without_a_slot() -> None:
    table = SlotTable(slots=1)
    table.cancelled.add("gone")
    with pytest.raises(JobCancelled):
        await gate(table).begin("gone")
    with pytest.raises(JobCancelled):
        await gate(table, slots=None).begin("gone")
    assert table.free == [1]


async def test_uncapped_calls_never_wait() -> None:
    table = SlotTable(slots=0)
    llm_gate = gate(table, slots=None)
    begun = await asyncio.gather(*(llm_gate.begin("job") for _ in range(5)))
    assert [b.slot for b in begun] == [None] * 5 and table.calls == 5


async def test_each_call_of_a_job_frees_the_slot_it_took() -> None:
    table = SlotTable(slots=2)
    meter = JobMeter(table, "job", max_calls=10, max_tokens=10_000, gate=gate(table, slots=2))  # type: ignore[arg-type]
    first, second = await meter.before_call(), await meter.before_call()
    assert {first, second} == {1, 2}
    await meter.release(second)  # the later call answered first
    assert table.free == [second]
    await meter.after_call(TokenUsage(prompt_tokens=5, completion_tokens=1))
    await meter.release(first)
    assert sorted(table.free) == [1, 2]
