"""The job store on real PostgreSQL: idempotency, the queue bound, dispatch, leases, recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from prreview.db import open_pool
from prreview.store import JobStore, NewJob

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    pool = await open_pool(database_url, max_size=5)
    yield JobStore(pool)
    await pool.close()


def job(number: int = 1, **options: object) -> NewJob:
    return NewJob(f"https://github.com/acme/shop/pull/{number}", "acme/shop", number, dict(options))


async def test_one_active_job_per_pr_and_options(store: JobStore) -> None:
    first = await store.insert_job(job(), max_queued=10)
    assert first is not None
    assert await store.insert_job(job(), max_queued=10) is None  # same key while active
    assert (await store.find_active_job(job()))["id"] == first["id"]
    assert await store.insert_job(job(post=True), max_queued=10) is not None  # other options


async def test_queue_bound_refuses_new_jobs(store: JobStore) -> None:
    for number in (1, 2):
        assert await store.insert_job(job(number), max_queued=2) is not None
    assert await store.insert_job(job(3), max_queued=2) is None
    assert await store.find_active_job(job(3)) is None


async def test_concurrent_claims_never_hand_out_a_job_twice(store: JobStore) -> None:
    for number in range(20):
        await store.insert_job(job(number), max_queued=100)
    claims = await asyncio.gather(*(store.claim_for_dispatch(3, []) for _ in range(10)))
    claimed = [job_id for batch in claims for job_id in batch]
    assert len(claimed) == len(set(claimed)) == 20


async def test_lease_lifecycle_and_recovery(store: JobStore) -> None:
    row = await store.insert_job(job(), max_queued=10)
    job_id = str(row["id"])
    started = await store.start_job(job_id, owner="a", lease_s=60, deadline_s=600)
    assert started["status"] == "running" and started["attempts"] == 1
    assert await store.start_job(job_id, owner="b", lease_s=60, deadline_s=600) is None  # one owner at a time
    assert [s.job_id for s in await store.renew_leases([job_id], owner="a", lease_s=60)] == [job_id]
    assert await store.renew_leases([job_id], owner="b", lease_s=60) == []
    assert await store.recover_jobs(max_attempts=3) == []  # lease still valid
    await store.renew_leases([job_id], owner="a", lease_s=0.001)
    await asyncio.sleep(0.05)
    recovered = await store.recover_jobs(max_attempts=3)
    assert [(str(r["id"]), r["status"]) for r in recovered] == [(job_id, "queued")]
    assert (await store.start_job(job_id, owner="b", lease_s=60, deadline_s=600))["attempts"] == 2


async def test_recovery_fails_a_job_out_of_attempts_and_cancels_a_cancelled_one(store: JobStore) -> None:
    ids = []
    for number in (1, 2):
        row = await store.insert_job(job(number), max_queued=10)
        ids.append(str(row["id"]))
        await store.start_job(ids[-1], owner="a", lease_s=60, deadline_s=600)
    await store.request_cancel(ids[1])
    recovered = {str(r["id"]): r["status"] for r in await store.recover_jobs(max_attempts=1, only_expired=False)}
    assert recovered == {ids[0]: "failed", ids[1]: "cancelled"}
    assert (await store.get_job(ids[0]))["error"]["code"] == "max_attempts_exceeded"


async def test_drained_job_returns_to_the_queue_without_spending_an_attempt(store: JobStore) -> None:
    job_id = str((await store.insert_job(job(), max_queued=10))["id"])
    await store.start_job(job_id, owner="a", lease_s=60, deadline_s=600)
    back = await store.return_to_queue(job_id, owner="a")
    assert back["status"] == "queued" and back["attempts"] == 0


async def test_global_llm_slots_are_a_distributed_semaphore(store: JobStore) -> None:
    await store.resize_llm_slots(2)
    job_id = str((await store.insert_job(job(), max_queued=10))["id"])
    first = await store.acquire_llm_slot(holder="a", job_id=job_id, hold_s=60)
    second = await store.acquire_llm_slot(holder="b", job_id=job_id, hold_s=60)
    assert {first, second} == {1, 2}
    assert await store.acquire_llm_slot(holder="c", job_id=job_id, hold_s=60) is None
    await store.release_llm_slot(first, holder="a")
    assert await store.acquire_llm_slot(holder="c", job_id=job_id, hold_s=0.001) == first
    await asyncio.sleep(0.05)  # an expired claim (its holder died) is free again
    assert await store.acquire_llm_slot(holder="d", job_id=job_id, hold_s=60) == first
    assert await store.llm_slots_in_use() == 2


async def test_events_carry_progress_and_count_files_done(store: JobStore) -> None:
    job_id = str((await store.insert_job(job(), max_queued=10))["id"])
    await store.record_event(job_id, "planned", {}, progress={"step": "review", "files_total": 3, "files_done": 0})
    await asyncio.gather(store.record_event(job_id, "group_done", {}, files_done_delta=1),
                         store.record_event(job_id, "group_done", {}, files_done_delta=2))
    row = await store.get_job(job_id)
    assert row["progress"] == {"step": "review", "files_total": 3, "files_done": 3}
    events = await store.events_after(job_id, 0)
    assert [e["kind"] for e in events] == ["queued", "planned", "group_done", "group_done"]
    assert [e["kind"] for e in await store.events_after(job_id, events[1]["id"])] == ["group_done"] * 2
