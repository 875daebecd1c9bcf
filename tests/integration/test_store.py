"""The job lifecycle and store on real PostgreSQL: idempotency, the queue bound, dispatch, leases,
recovery, one event per transition, the LLM gate's cancel check, retention."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from actors.reconciler import retention
from prreview.access import QuotaExceeded
from prreview.db import open_pool
from prreview.errors import InvalidPRURL, LLMTimeout, QueueFull
from prreview.lifecycle import Lifecycle, Quota
from prreview.models import Status
from prreview.store import JobStore, NewJob

pytestmark = pytest.mark.integration


@dataclass
class DB:
    store: JobStore
    lifecycle: Lifecycle
    url: str


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[DB]:
    pool = await open_pool(database_url, max_size=12)
    yield DB(JobStore(pool), Lifecycle(pool), database_url)
    await pool.close()


def job(number: int = 1, repo: str = "acme/shop", **options: object) -> NewJob:
    return NewJob(f"https://github.com/{repo}/pull/{number}", repo, number, dict(options))


async def kinds(db: DB, job_id: str) -> list[str]:
    return [e["kind"] for e in await db.store.events_after(job_id, 0)]


async def started(db: DB, number: int = 1, owner: str = "a") -> str:
    new = await db.lifecycle.submit(job(number), max_queued=100)
    assert new is not None
    running = await db.lifecycle.start(new.id, owner=owner, lease_s=60, deadline_s=600, max_attempts=3)
    assert running is not None and running.status is Status.RUNNING
    return new.id


async def test_one_active_job_per_pr_and_options(db: DB) -> None:
    first = await db.lifecycle.submit(job(), max_queued=10)
    assert first is not None
    assert await db.lifecycle.submit(job(), max_queued=10) is None  # same key while active
    found = await db.store.find_active_job(job())
    assert found is not None and found.id == first.id
    assert await db.lifecycle.submit(job(post=True), max_queued=10) is not None  # other options


async def test_the_key_ignores_the_case_of_owner_and_repository(db: DB) -> None:
    first = await db.lifecycle.submit(job(repo="Acme/Shop"), max_queued=10)
    assert first is not None
    assert await db.lifecycle.submit(job(repo="acme/shop"), max_queued=10) is None
    found = await db.store.find_reusable_job(job(repo="ACME/SHOP"))
    assert found is not None and found.id == first.id


async def test_queue_bound_refuses_new_jobs(db: DB) -> None:
    for number in (1, 2):
        assert await db.lifecycle.submit(job(number), max_queued=2) is not None
    assert await db.lifecycle.submit(job(3), max_queued=2) is None
    assert await db.store.find_active_job(job(3)) is None


async def test_concurrent_claims_never_hand_out_a_job_twice(db: DB) -> None:
    for number in range(20):
        await db.lifecycle.submit(job(number), max_queued=100)
    claims = await asyncio.gather(*(db.lifecycle.claim(3, exclude=[]) for _ in range(10)))
    claimed = [j.id for batch in claims for j in batch]
    assert len(claimed) == len(set(claimed)) == 20


async def test_lease_lifecycle_and_recovery(db: DB) -> None:
    job_id = await started(db)
    assert await db.lifecycle.start(job_id, owner="b", lease_s=60, deadline_s=600, max_attempts=3) is None
    assert [s.job_id for s in await db.lifecycle.heartbeat([job_id], owner="a", lease_s=60)] == [job_id]
    assert await db.lifecycle.heartbeat([job_id], owner="b", lease_s=60) == []
    assert await db.lifecycle.recover(max_attempts=3, reason="test") == []  # lease still valid
    await db.lifecycle.heartbeat([job_id], owner="a", lease_s=0.001)
    await asyncio.sleep(0.05)
    recovered = await db.lifecycle.recover(max_attempts=3, reason="worker lease expired")
    assert [(j.id, j.status) for j in recovered] == [(job_id, Status.QUEUED)]
    again = await db.lifecycle.start(job_id, owner="b", lease_s=60, deadline_s=600, max_attempts=3)
    assert again is not None and again.attempts == 2
    assert await kinds(db, job_id) == ["queued", "started", "requeued", "started"]
    requeued = (await db.store.events_after(job_id, 0))[2]
    assert requeued["data"] == {"reason": "worker lease expired"}


async def test_recovery_fails_a_job_out_of_attempts_and_cancels_a_cancelled_one(db: DB) -> None:
    ids = [await started(db, 1), await started(db, 2)]
    await db.lifecycle.cancel(ids[1])
    recovered = {j.id: j.status for j in await db.lifecycle.recover(max_attempts=1, reason="lost",
                                                                     only_expired=False)}
    assert recovered == {ids[0]: Status.FAILED, ids[1]: Status.CANCELLED}
    failed = await db.store.get_job(ids[0])
    assert failed is not None and failed.error is not None and failed.error["code"] == "max_attempts_exceeded"
    # The sweep's `failed` event carries the same payload as any other `failed` event: the error.
    last = (await db.store.events_after(ids[0], 0))[-1]
    assert last["kind"] == "failed" and last["data"]["error"] == failed.error


async def test_a_job_out_of_attempts_fails_when_started(db: DB) -> None:
    job_id = await started(db)
    await db.lifecycle.recover(max_attempts=3, reason="lost", only_expired=False)
    failed = await db.lifecycle.start(job_id, owner="b", lease_s=60, deadline_s=600, max_attempts=1)
    assert failed is not None and failed.status is Status.FAILED
    assert failed.error == {"code": "max_attempts_exceeded", "message": "The review was stopped after 1 attempts: its "
                            "worker died 1 times in a row without finishing a step."}


async def checkpoint_step(db: DB, job_id: str, step: int) -> None:
    """What LangGraph's saver writes when a graph step ends (its own table, its own columns)."""
    async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, checkpoint, metadata) "
            "VALUES (%s, '', %s, '{}', jsonb_build_object('step', %s::int))", (job_id, f"ckpt-{step}", step))


async def test_only_deaths_without_progress_count_toward_max_attempts(db: DB) -> None:
    job_id = await started(db)
    await checkpoint_step(db, job_id, -1)  # LangGraph's input checkpoint is no progress
    lost = await db.lifecycle.recover(max_attempts=2, reason="lost", only_expired=False)
    assert [j.status for j in lost] == [Status.QUEUED]
    for step in range(1, 6):  # a worker dies after each step: far more deaths than max_attempts
        assert await db.lifecycle.start(job_id, owner="b", lease_s=60, deadline_s=600, max_attempts=2) is not None
        await checkpoint_step(db, job_id, step)
        back = await db.lifecycle.recover(max_attempts=2, reason="lost", only_expired=False)
        assert [j.status for j in back] == [Status.QUEUED]
    for attempt, status in ((7, Status.QUEUED), (8, Status.FAILED)):  # then two deaths in a row, no step
        again = await db.lifecycle.start(job_id, owner="b", lease_s=60, deadline_s=600, max_attempts=2)
        assert again is not None and again.attempts == attempt
        lost = await db.lifecycle.recover(max_attempts=2, reason="lost", only_expired=False)
        assert [j.status for j in lost] == [status]
    assert lost[0].error == {"code": "max_attempts_exceeded", "message": "The review was stopped after 8 attempts: "
                             "its worker died 2 times in a row without finishing a step."}


async def test_drained_job_returns_to_the_queue_without_spending_an_attempt(db: DB) -> None:
    job_id = await started(db)
    back = await db.lifecycle.requeue(job_id, owner="a", reason="agent replica draining")
    assert back is not None and back.status is Status.QUEUED and back.attempts == 0
    assert back.progress["step"] == "queued"


async def test_each_transition_writes_exactly_one_event_with_its_payload(db: DB) -> None:
    ok, bad = await started(db, 1), await started(db, 2)
    review = {"summary": "s", "verdict": "comment", "findings": [{"x": 1}, {"x": 2}]}
    assert (await db.lifecycle.finish(ok, owner="a", review=review)) is not None
    assert await db.lifecycle.finish(ok, owner="a", review=review) is None  # once only
    assert (await db.lifecycle.fail(bad, owner="a", error=LLMTimeout("slow"))) is not None
    assert await kinds(db, ok) == ["queued", "started", "succeeded"]
    assert (await db.store.events_after(ok, 0))[-1]["data"] == {"verdict": "comment", "findings": 2}
    assert (await db.store.events_after(bad, 0))[-1]["data"] == {"error": {"code": "llm_timeout",
                                                                           "message": "slow"}}
    finished = await db.store.get_job(ok)
    assert finished is not None and finished.progress["step"] == "done" and finished.lease_owner is None


async def test_two_concurrent_cancels_give_one_event(db: DB) -> None:
    queued = await db.lifecycle.submit(job(1), max_queued=10)
    assert queued is not None
    running = await started(db, 2)
    for job_id in (queued.id, running):
        results = await asyncio.gather(*(db.lifecycle.cancel(job_id) for _ in range(5)))
        assert sum(r is not None for r in results) == 1
    assert await kinds(db, queued.id) == ["queued", "cancelled"]
    assert await kinds(db, running) == ["queued", "started", "cancel_requested"]
    stopped = await db.lifecycle.stop_cancelled(running, owner="a")
    assert stopped is not None and stopped.status is Status.CANCELLED
    assert await kinds(db, running) == ["queued", "started", "cancel_requested", "cancelled"]
    assert await db.lifecycle.cancel(running) is None  # finished: nothing changes


async def test_status_changes_are_notified_at_commit(db: DB) -> None:
    async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as listener:
        for channel in ("pr_review_events", "pr_review_jobs", "pr_review_cancel"):
            await listener.execute(f"LISTEN {channel}")
        job_id = await started(db)
        await db.lifecycle.cancel(job_id)
        seen = [(n.channel, n.payload) async for n in listener.notifies(timeout=1.0)]
    assert ("pr_review_jobs", job_id) in seen  # queued: the dispatcher wakes
    assert ("pr_review_cancel", job_id) in seen  # the running agent is told
    assert seen.count(("pr_review_events", job_id)) == 3  # queued, started, cancel_requested


async def test_no_llm_call_begins_for_a_cancelled_job(db: DB) -> None:
    job_id = await started(db)
    first = await db.store.begin_llm_call(job_id=job_id, owner="a", holder="a", gated=False, hold_s=60)
    assert first["allowed"] and first["usage"]["llm_calls"] == 1 and first["slot"] is None
    assert not (await db.store.begin_llm_call(job_id=job_id, owner="b", holder="b", gated=False,
                                              hold_s=60))["allowed"]  # not the owner
    await db.lifecycle.cancel(job_id)
    refused = await db.store.begin_llm_call(job_id=job_id, owner="a", holder="a", gated=False, hold_s=60)
    assert not refused["allowed"] and refused["usage"] is None
    after = await db.store.get_job(job_id)
    assert after is not None and after.usage["llm_calls"] == 1  # the refused call was not counted


async def test_global_llm_slots_are_a_distributed_semaphore(db: DB) -> None:
    await db.store.resize_llm_slots(2)
    job_id = await started(db)

    async def begin(holder: str, hold_s: float = 60) -> int | None:
        row = await db.store.begin_llm_call(job_id=job_id, owner="a", holder=holder, gated=True, hold_s=hold_s)
        assert row["allowed"]
        return row["slot"]

    first, second = await begin("a"), await begin("b")
    assert {first, second} == {1, 2}
    assert await begin("c") is None  # no slot: not counted either
    assert first is not None
    await db.store.release_llm_slot(first, holder="a")
    assert await begin("c", hold_s=0.001) == first
    await asyncio.sleep(0.05)  # an expired claim (its holder died) is free again
    assert await begin("d") == first
    assert await db.store.llm_slots_in_use() == 2
    counted = await db.store.get_job(job_id)
    assert counted is not None and counted.usage["llm_calls"] == 4


async def test_a_job_that_stops_running_frees_its_llm_slots(db: DB) -> None:
    await db.store.resize_llm_slots(2)
    lost, alive = await started(db, 1, owner="dead"), await started(db, 2, owner="alive")

    async def begin(job_id: str, owner: str) -> int | None:
        row = await db.store.begin_llm_call(job_id=job_id, owner=owner, holder=owner, gated=True, hold_s=600)
        return row["slot"]

    assert None not in (await begin(lost, "dead"), await begin(lost, "dead"))
    assert await begin(alive, "alive") is None  # the dead worker's claims hold the whole cap
    await db.lifecycle.recover(max_attempts=3, reason="worker lost", job_id=lost, only_expired=False)
    assert await db.store.llm_slots_in_use() == 0  # not in ten minutes, when the claims expire
    assert await begin(alive, "alive") is not None
    # A call begun as its job was being stopped: the slot it took is freed when the job ends.
    await db.lifecycle.cancel(alive)
    assert await db.lifecycle.stop_cancelled(alive, owner="alive") is not None
    assert await db.store.llm_slots_in_use() == 0


async def test_events_carry_progress_and_count_files_done(db: DB) -> None:
    new = await db.lifecycle.submit(job(), max_queued=10)
    assert new is not None
    await db.store.record_event(new.id, "planned", {}, progress={"step": "review", "files_total": 3,
                                                                  "files_done": 0})
    await asyncio.gather(db.store.record_event(new.id, "group_done", {}, files_done_delta=1),
                         db.store.record_event(new.id, "group_done", {}, files_done_delta=2))
    row = await db.store.get_job(new.id)
    assert row is not None and row.progress == {"step": "review", "files_total": 3, "files_done": 3}
    events = await db.store.events_after(new.id, 0)
    assert [e["kind"] for e in events] == ["queued", "planned", "group_done", "group_done"]
    assert [e["kind"] for e in await db.store.events_after(new.id, events[1]["id"])] == ["group_done"] * 2


async def test_a_batch_is_one_statement_that_reuses_active_jobs_and_keeps_errors(db: DB) -> None:
    active = await db.lifecycle.submit(job(1), max_queued=10)
    assert active is not None
    items: list[tuple[str, NewJob | InvalidPRURL]] = [
        ("u1", job(1)), ("u2", job(2)), ("bad", InvalidPRURL("not a PR")), ("u2-again", job(2, repo="ACME/shop")),
        ("u3", job(3)), ("u4", job(4))]
    batch_id, entries = await db.lifecycle.submit_batch(items, {}, submitted_by="local", max_queued=3,
                                                        queue_full=QueueFull("full"))
    assert [e.pr_url for e in entries] == ["u1", "u2", "bad", "u2-again", "u3", "u4"]
    assert entries[0].job_id == active.id and not entries[0].created
    assert entries[1].created and entries[3].job_id == entries[1].job_id and not entries[3].created
    assert entries[2].error == {"code": "invalid_pr_url", "message": "not a PR"}
    assert entries[4].created  # the queue had room for two new jobs: #2 and #3
    assert entries[5].job_id is None and entries[5].error == {"code": "queue_full", "message": "full"}
    stored = await db.store.batch_items(batch_id)
    assert [r["item_url"] for r in stored] == ["u1", "u2", "bad", "u2-again", "u3", "u4"]


async def test_a_batch_admits_no_more_than_the_submitters_quotas(db: DB) -> None:
    def mine(number: int) -> NewJob:
        return replace(job(number), submitted_by="key:small")

    assert await db.lifecycle.submit(mine(1), max_queued=10) is not None  # one already queued
    over, full = QuotaExceeded("at its limit"), QueueFull("full")
    items: list[tuple[str, NewJob | InvalidPRURL]] = [(f"u{n}", mine(n)) for n in (1, 2, 3, 4)]
    _, entries = await db.lifecycle.submit_batch(items, {}, submitted_by="key:small", max_queued=10,
                                                 queue_full=full, quota=Quota(max_active=3), quota_exceeded=over)
    assert [e.created for e in entries] == [False, True, True, False]  # #1 is the active job, reused
    assert entries[0].job_id is not None and entries[3].error == over.to_dict()
    # The hourly quota counts every job made in the last hour, and the tighter bound wins.
    _, entries = await db.lifecycle.submit_batch([("u5", mine(5)), ("u6", mine(6))], {}, submitted_by="key:small",
                                                 max_queued=10, queue_full=full, quota=Quota(max_per_hour=4),
                                                 quota_exceeded=over)
    assert [e.error for e in entries] == [None, over.to_dict()]
    _, entries = await db.lifecycle.submit_batch([("u7", mine(7))], {}, submitted_by="key:small", max_queued=4,
                                                 queue_full=full, quota=Quota(max_active=50), quota_exceeded=over)
    assert [e.error for e in entries] == [full.to_dict()]  # the queue is the bound left
    _, entries = await db.lifecycle.submit_batch([("u7", job(7))], {}, submitted_by="local", max_queued=10,
                                                 queue_full=full)
    assert entries[0].created  # another submitter's quota is its own


async def test_a_batch_answers_a_succeeded_review_it_is_told_is_current(db: DB) -> None:
    done = await started(db, 1)
    await db.lifecycle.finish(done, owner="a", review={"summary": "s", "verdict": "approve", "findings": []})
    assert list(await db.store.latest_succeeded([job(1).key, job(2).key])) == [job(1).key]
    _, entries = await db.lifecycle.submit_batch([("u1", job(1)), ("u2", job(2))], {}, submitted_by="local",
                                                 max_queued=10, queue_full=QueueFull("full"), reuse={job(1).key: done})
    assert (entries[0].job_id, entries[0].status, entries[0].created) == (done, "succeeded", False)
    assert entries[1].created  # no review of #2 yet
    _, again = await db.lifecycle.submit_batch([("u1", job(1))], {}, submitted_by="local", max_queued=10,
                                               queue_full=QueueFull("full"))
    assert again[0].created and again[0].job_id != done  # not current (the caller did not say so): reviewed anew


async def test_retention_deletes_the_threads_left_over_by_finished_and_deleted_jobs(db: DB) -> None:
    saver = AsyncPostgresSaver(conn=db.store.pool)  # type: ignore[arg-type]
    finished, running, gone = await started(db, 1), await started(db, 2), str(uuid.uuid4())
    for thread in (finished, running, gone, "not-a-job"):
        await saver.aput({"configurable": {"thread_id": thread, "checkpoint_ns": ""}}, empty_checkpoint(), {}, {})
    await db.lifecycle.finish(finished, owner="a", review={"summary": "s", "verdict": "approve", "findings": []})
    await retention(db.lifecycle, saver, retention_days=30)
    async with db.store.pool.connection() as conn:
        rows = await (await conn.execute("SELECT DISTINCT thread_id FROM checkpoints")).fetchall()
    left = {r["thread_id"] for r in rows}
    assert left == {running, "not-a-job"}  # a running review keeps its steps; a foreign thread is not ours


async def test_retention_removes_old_finished_jobs_with_their_events_and_batches(db: DB) -> None:
    old, recent = await started(db, 1), await started(db, 2)
    review = {"summary": "s", "verdict": "approve", "findings": []}
    for job_id in (old, recent):
        await db.lifecycle.finish(job_id, owner="a", review=review)
    await db.lifecycle.submit_batch([("u", job(1))], {}, submitted_by="local", max_queued=10,
                                    queue_full=QueueFull("full"))
    async with db.store.pool.connection() as conn:
        await conn.execute("UPDATE jobs SET finished_at = now() - interval '31 days' WHERE id = %s", (old,))
        await conn.execute("UPDATE batches SET created_at = now() - interval '31 days'")
    purged = await db.lifecycle.purge(retention_days=30)
    assert (purged.jobs, purged.batches) == (1, 1)
    assert await db.store.get_job(old) is None and await db.store.events_after(old, 0) == []
    assert await db.store.get_job(recent) is not None


async def test_service_secrets_are_made_once_and_shared(db: DB) -> None:
    secrets = await asyncio.gather(*(db.store.service_secret("markers") for _ in range(5)))
    assert len(set(secrets)) == 1 and len(secrets[0]) == 32
    assert await db.store.service_secret("other") != secrets[0]


async def test_callers_cancelled_mid_statement_leave_the_pool_whole(database_url: str) -> None:
    """Clients hang up and reviews are stopped at any moment; the statements they were waiting
    for must not strand the pool's connections (the next caller gets one at once)."""
    pool = await open_pool(database_url, max_size=2, timeout_s=2)
    try:
        store = JobStore(pool)
        for delay_ms in range(0, 40):
            tasks = [asyncio.create_task(store.sql.one("llm_slots_in_use")) for _ in range(6)]
            await asyncio.sleep(delay_ms / 4000)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert await asyncio.wait_for(store.llm_slots_in_use(), timeout=2) == 0
        stats = pool.get_stats()
        assert stats.get("requests_waiting", 0) == 0
    finally:
        await pool.close()
