"""The job store: every read and write of jobs, batches and events, by named query."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from prreview.models import ReviewResource
from prreview.sql import queries

Row = dict[str, Any]


def options_hash(options: dict[str, Any]) -> str:
    """Stable digest of review options: part of the idempotency key."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class NewJob:
    pr_url: str
    repo: str
    number: int
    options: dict[str, Any]


@dataclass(frozen=True)
class LeaseState:
    job_id: str
    cancel_requested: bool
    past_deadline: bool


@dataclass(frozen=True)
class QueueStats:
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


def to_resource(row: Row) -> ReviewResource:
    return ReviewResource(
        id=str(row["id"]), pr_url=row["pr_url"], repo=row["repo"], number=row["number"],
        head_sha=row["head_sha"], status=row["status"], attempts=row["attempts"],
        created_at=row["created_at"], updated_at=row["updated_at"], progress=row["progress"],
        usage=row["usage"], review=row["review"], error=row["error"], options=row["options"],
    )


class JobStore:
    """Thin typed layer over the named queries; holds no state but the pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def _one(self, name: str, **params: Any) -> Row | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(queries()[name], params)
            return await cur.fetchone()  # type: ignore[return-value]

    async def _all(self, name: str, **params: Any) -> list[Row]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(queries()[name], params)
            return await cur.fetchall()  # type: ignore[return-value]

    # --- submit ---------------------------------------------------------------------------------
    async def insert_job(self, job: NewJob, *, max_queued: int) -> Row | None:
        """The new job's row, or None when an active duplicate exists or the queue is full."""
        return await self._one(
            "insert_job", id=uuid.uuid4(), pr_url=job.pr_url, repo=job.repo, number=job.number,
            options=Jsonb(job.options), options_hash=options_hash(job.options), max_queued=max_queued,
        )

    async def find_active_job(self, job: NewJob) -> Row | None:
        return await self._one("find_active_job", repo=job.repo, number=job.number,
                               options_hash=options_hash(job.options))

    async def find_reusable_job(self, job: NewJob) -> Row | None:
        """The active job for this key, else its latest succeeded one."""
        return await self._one("find_reusable_job", repo=job.repo, number=job.number,
                               options_hash=options_hash(job.options))

    # --- read -----------------------------------------------------------------------------------
    async def get_job(self, job_id: str) -> Row | None:
        try:
            parsed = uuid.UUID(job_id)
        except ValueError:
            return None
        return await self._one("get_job", id=parsed)

    async def list_jobs(self, *, status: str | None, limit: int) -> list[Row]:
        return await self._all("list_jobs", status=status, limit=limit)

    async def events_after(self, job_id: str, after_id: int, limit: int = 200) -> list[Row]:
        return await self._all("events_after", job_id=job_id, after_id=after_id, limit=limit)

    async def queue_stats(self) -> QueueStats:
        row = await self._one("queue_stats")
        assert row is not None
        return QueueStats(**row)

    async def recent_failures(self, limit: int = 5) -> list[Row]:
        return await self._all("recent_failures", limit=limit)

    # --- dispatch and leases --------------------------------------------------------------------
    async def claim_for_dispatch(self, limit: int, in_flight: list[str]) -> list[str]:
        if limit <= 0:
            return []
        rows = await self._all("claim_for_dispatch", limit=limit, in_flight=[uuid.UUID(i) for i in in_flight])
        return [str(row["id"]) for row in rows]

    async def release_dispatch(self, job_id: str) -> None:
        await self._one_exec("release_dispatch", id=job_id)

    async def release_stale_dispatches(self, in_flight: list[str]) -> list[str]:
        rows = await self._all("release_stale_dispatches", in_flight=[uuid.UUID(i) for i in in_flight])
        return [str(row["id"]) for row in rows]

    async def start_job(self, job_id: str, *, owner: str, lease_s: float, deadline_s: float) -> Row | None:
        return await self._one("start_job", id=job_id, owner=owner, lease_s=lease_s, deadline_s=deadline_s)

    async def renew_leases(self, job_ids: list[str], *, owner: str, lease_s: float) -> list[LeaseState]:
        if not job_ids:
            return []
        rows = await self._all("renew_leases", ids=[uuid.UUID(i) for i in job_ids], owner=owner,
                               lease_s=lease_s)
        return [LeaseState(str(r["id"]), r["cancel_requested"], r["past_deadline"]) for r in rows]

    async def finish_job(self, job_id: str, *, owner: str, status: str,
                         review: dict[str, Any] | None = None, error: dict[str, str] | None = None) -> Row | None:
        return await self._one("finish_job", id=job_id, owner=owner, status=status,
                               review=Jsonb(review) if review is not None else None,
                               error=Jsonb(error) if error is not None else None)

    async def return_to_queue(self, job_id: str, *, owner: str) -> Row | None:
        return await self._one("return_to_queue", id=job_id, owner=owner)

    async def recover_jobs(self, *, max_attempts: int, job_id: str | None = None,
                           only_expired: bool = True) -> list[Row]:
        """Re-queue running jobs whose worker is gone (or fail/cancel them); see recover_job."""
        return await self._all("recover_job", id=job_id, max_attempts=max_attempts, only_expired=only_expired)

    async def request_cancel(self, job_id: str) -> Row | None:
        return await self._one("request_cancel", id=job_id)

    # --- progress -------------------------------------------------------------------------------
    async def add_usage(self, job_id: str, *, llm_calls: int, prompt_tokens: int,
                        completion_tokens: int) -> dict[str, int]:
        row = await self._one("add_usage", id=job_id, llm_calls=llm_calls, prompt_tokens=prompt_tokens,
                              completion_tokens=completion_tokens)
        return dict(row["usage"]) if row else {}

    async def set_head_sha(self, job_id: str, head_sha: str) -> None:
        await self._one_exec("set_head_sha", id=job_id, head_sha=head_sha)

    async def record_event(self, job_id: str, kind: str, data: dict[str, Any], *,
                           progress: dict[str, Any] | None = None, files_done_delta: int = 0) -> Row | None:
        """Append an event; returns {event_id, progress, usage} after it, None for an unknown job."""
        return await self._one("record_event", job_id=job_id, kind=kind, data=Jsonb(data),
                               progress=Jsonb(progress) if progress is not None else None,
                               files_done_delta=files_done_delta)

    # --- the global LLM concurrency cap ----------------------------------------------------------
    async def resize_llm_slots(self, slots: int) -> None:
        await self._one_exec("resize_llm_slots", slots=slots)

    async def acquire_llm_slot(self, *, holder: str, job_id: str, hold_s: float) -> int | None:
        row = await self._one("acquire_llm_slot", holder=holder, job_id=job_id, hold_s=hold_s)
        return row["slot"] if row else None

    async def release_llm_slot(self, slot: int, *, holder: str) -> None:
        await self._one_exec("release_llm_slot", slot=slot, holder=holder)

    async def llm_slots_in_use(self) -> int:
        row = await self._one("llm_slots_in_use")
        return int(row["in_use"]) if row else 0

    # --- batches --------------------------------------------------------------------------------
    async def insert_batch(self, options: dict[str, Any]) -> str:
        row = await self._one("insert_batch", id=uuid.uuid4(), options=Jsonb(options))
        assert row is not None
        return str(row["id"])

    async def insert_batch_item(self, batch_id: str, position: int, pr_url: str, *,
                                job_id: str | None, error: dict[str, str] | None) -> None:
        await self._one_exec("insert_batch_item", batch_id=batch_id, position=position, pr_url=pr_url,
                             job_id=job_id, error=Jsonb(error) if error is not None else None)

    async def get_batch(self, batch_id: str) -> Row | None:
        try:
            parsed = uuid.UUID(batch_id)
        except ValueError:
            return None
        return await self._one("get_batch", id=parsed)

    async def batch_items(self, batch_id: str) -> list[Row]:
        return await self._all("batch_items", batch_id=batch_id)

    async def _one_exec(self, name: str, **params: Any) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(queries()[name], params)
