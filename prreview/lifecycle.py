"""The life of a review job, in one place: every transition is one SQL statement.

    submit ──► queued ──claim──► (dispatched) ──start──► running ──finish──► succeeded
                 ▲                     │release                │   ├─fail──────► failed
                 │                     ▼                       │   └─stop──────► cancelled
                 └────────── requeue (drain) / recover (worker lost) ◄┘
    cancel: queued ──► cancelled at once; running ──► flagged, its agent told (NOTIFY) and stops it

Each status change writes its event in the same statement (the `pr_review_job_event` trigger of
migration 0003 builds it from the row, so every writer produces the same payload), the event
NOTIFYs its listeners (SSE streams, the dispatcher, the agents), and the transition's metric is
recorded here and nowhere else. Claim, release and heartbeat change no status and write no event.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from prreview import metrics
from prreview.errors import PRReviewError
from prreview.models import Status
from prreview.store import Job, JobStore, NewJob, Statements, options_hash

log = logging.getLogger(__name__)

CANCELLED = {"code": "cancelled", "message": "The review was cancelled."}


@dataclass(frozen=True)
class LeaseState:
    job_id: str
    cancel_requested: bool
    past_deadline: bool


@dataclass(frozen=True)
class BatchEntry:
    """One URL of a submitted batch: its job, or why it was refused."""

    position: int
    pr_url: str
    job_id: str | None
    status: str | None
    error: dict[str, str] | None
    created: bool


@dataclass(frozen=True)
class Purged:
    jobs: int
    batches: int
    snapshots: int


@dataclass(frozen=True)
class Quota:
    """A submitter's limits (an API key's): None is no limit."""

    max_active: int | None = None
    max_per_hour: int | None = None


class Lifecycle:
    """The transitions of review jobs. Holds nothing but the pool (or, inside `transaction()`,
    one connection)."""

    def __init__(self, pool: AsyncConnectionPool, sql: Statements | None = None) -> None:
        self.pool = pool
        self.sql = sql or Statements(pool)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[tuple[Lifecycle, JobStore]]:
        """Transitions (and reads) that commit together: a webhook delivery, its review, the
        reviews it supersedes."""
        async with self.sql.transaction() as sql:
            yield Lifecycle(self.pool, sql), JobStore(self.pool, sql)

    # --- entering the queue -------------------------------------------------------------------------
    async def submit(self, job: NewJob, *, max_queued: int, quota: Quota | None = None) -> Job | None:
        """The new queued job, or None when an active job has the same key, the queue is full or
        the submitter is over its quota."""
        row = await self.sql.one("submit", id=uuid.uuid4(), pr_url=job.pr_url, repo=job.repo,
                                 number=job.number, options=Jsonb(job.options),
                                 options_hash=options_hash(job.options), key=job.key,
                                 submitted_by=job.submitted_by, head_sha=job.head_sha,
                                 installation_id=job.installation_id, max_queued=max_queued,
                                 max_active=quota.max_active if quota else None,
                                 max_per_hour=quota.max_per_hour if quota else None)
        if row is None:
            return None
        metrics.review_submitted()
        return Job.from_row(row)

    async def submit_batch(self, items: list[tuple[str, NewJob | PRReviewError]], options: dict[str, Any], *,
                           submitted_by: str, max_queued: int, queue_full: PRReviewError,
                           quota: Quota | None = None, quota_exceeded: PRReviewError | None = None,
                           reuse: dict[str, str] | None = None) -> tuple[str, list[BatchEntry]]:
        """A batch of (URL, parsed job or the error that refused it) in one statement; `reuse`
        maps a job key to a succeeded review still current for it (answered instead of a new one).
        New jobs beyond the submitter's `quota` get `quota_exceeded`, beyond the queue `queue_full`."""
        batch_id = uuid.uuid4()
        reuse, quota = reuse or {}, quota or Quota()
        rows = [{"position": i, "url": url, "pr_url": url, "id": str(uuid.uuid4()),
                 **({"error": parsed.to_dict()} if isinstance(parsed, PRReviewError)
                    else {"repo": parsed.repo, "number": parsed.number, "pr_url": parsed.pr_url,
                          "key": parsed.key, "reuse": reuse.get(parsed.key)})}
                for i, (url, parsed) in enumerate(items)]
        result = await self.sql.all("submit_batch", batch_id=batch_id, items=Jsonb(rows), options=Jsonb(options),
                                    options_hash=options_hash(options), max_queued=max_queued,
                                    submitted_by=submitted_by, queue_full=Jsonb(queue_full.to_dict()),
                                    max_active=quota.max_active, max_per_hour=quota.max_per_hour,
                                    quota_exceeded=Jsonb((quota_exceeded or queue_full).to_dict()))
        entries = [BatchEntry(r["position"], r["url"], str(r["job_id"]) if r["job_id"] else None,
                              r["status"], r["error"], r["created"]) for r in result]
        metrics.review_submitted(sum(e.created for e in entries))
        return str(batch_id), entries

    async def record_delivery(self, delivery_id: str, event: str) -> bool:
        """Remember a GitHub delivery; False when it was seen before (a redelivery)."""
        return await self.sql.one("record_delivery", id=delivery_id, event=event) is not None

    async def supersede(self, job: NewJob) -> list[Job]:
        """Cancel the submitter's queued or running reviews of the same PR at another head: a
        new push makes them moot."""
        rows = await self.sql.all("active_jobs_of_pr", repo=job.repo, number=job.number,
                                  submitted_by=job.submitted_by)
        reason = f"superseded by a review of {job.head_sha}"
        return [cancelled for row in rows if row["head_sha"] != job.head_sha and row["job_key"] != job.key
                if (cancelled := await self.cancel(str(row["id"]), reason=reason)) is not None]

    # --- dispatch (no status change) ------------------------------------------------------------------
    async def claim(self, limit: int, *, exclude: list[str]) -> list[Job]:
        if limit <= 0:
            return []
        rows = await self.sql.all("claim", limit=limit, exclude=[uuid.UUID(i) for i in exclude])
        return [Job.from_row(r) for r in rows]

    async def release(self, job_id: str) -> None:
        await self.sql.one("release", id=job_id)

    async def release_stale(self, tracked: list[str]) -> list[str]:
        rows = await self.sql.all("release_stale", tracked=[uuid.UUID(i) for i in tracked])
        return [str(r["id"]) for r in rows]

    # --- running --------------------------------------------------------------------------------------
    async def start(self, job_id: str, *, owner: str, lease_s: float, deadline_s: float,
                    max_attempts: int) -> Job | None:
        """The job, now running under `owner`'s lease (or failed: out of attempts); None when it is
        no longer queued (started elsewhere, finished or cancelled meanwhile)."""
        row = await self.sql.one("start", id=job_id, owner=owner, lease_s=lease_s, deadline_s=deadline_s,
                                 max_attempts=max_attempts)
        return self._observe(row, started=True)

    async def heartbeat(self, job_ids: list[str], *, owner: str, lease_s: float) -> list[LeaseState]:
        if not job_ids:
            return []
        rows = await self.sql.all("heartbeat", ids=[uuid.UUID(i) for i in job_ids], owner=owner, lease_s=lease_s)
        return [LeaseState(str(r["id"]), r["cancel_requested"], r["past_deadline"]) for r in rows]

    async def requeue(self, job_id: str, *, owner: str, reason: str) -> Job | None:
        """Back to the queue without spending the attempt (graceful drain)."""
        return self._observe(await self.sql.one("requeue", id=job_id, owner=owner, reason=reason))

    async def finish(self, job_id: str, *, owner: str, review: dict[str, Any]) -> Job | None:
        return await self._end(job_id, owner, Status.SUCCEEDED, review=review)

    async def fail(self, job_id: str, *, owner: str, error: PRReviewError) -> Job | None:
        return await self._end(job_id, owner, Status.FAILED, error=error.to_dict())

    async def stop_cancelled(self, job_id: str, *, owner: str) -> Job | None:
        """A running job whose cancel request its worker has acted on."""
        return await self._end(job_id, owner, Status.CANCELLED, error=CANCELLED, reason="cancelled by the user")

    async def _end(self, job_id: str, owner: str, status: Status, *, review: dict[str, Any] | None = None,
                   error: dict[str, str] | None = None, reason: str | None = None) -> Job | None:
        """None when `owner` no longer holds the job (its lease was taken over): nothing written."""
        row = await self.sql.one("finish", id=job_id, owner=owner, status=status.value, reason=reason,
                                 review=Jsonb(review) if review is not None else None,
                                 error=Jsonb(error) if error is not None else None)
        return self._observe(row)

    # --- from outside the worker ------------------------------------------------------------------------
    async def cancel(self, job_id: str, *, reason: str = "cancelled by the user") -> Job | None:
        """Cancel a queued job, or flag a running one (its agent is told at once). None when the
        job is already finished, already being cancelled, or unknown."""
        return self._observe(await self.sql.one("cancel", id=job_id, reason=reason))

    async def recover(self, *, max_attempts: int, reason: str, job_id: str | None = None,
                      only_expired: bool = True) -> list[Job]:
        """Running jobs whose worker is gone go back to the queue (or fail when out of attempts, or
        end cancelled when a cancel was pending). `only_expired`: only those whose lease ran out."""
        rows = await self.sql.all("recover", id=job_id, max_attempts=max_attempts, reason=reason,
                                  only_expired=only_expired)
        return [job for row in rows if (job := self._observe(row)) is not None]

    async def purge(self, *, retention_days: float) -> Purged:
        """Retention: jobs, events and batches older than `retention_days`, unused PR snapshots."""
        row = await self.sql.one("purge_expired", days=retention_days)
        assert row is not None
        return Purged(int(row["jobs"]), int(row["batches"]), int(row["snapshots"]))

    async def leftover_threads(self, *, limit: int = 100) -> list[str]:
        """LangGraph threads of finished or deleted jobs (their worker died before deleting them)."""
        rows = await self.sql.all("leftover_threads", limit=limit)
        return [str(r["thread_id"]) for r in rows]

    # --- the one place that records a transition's metric ------------------------------------------------
    @staticmethod
    def _observe(row: dict[str, Any] | None, *, started: bool = False) -> Job | None:
        """Every statement here returns only the rows it changed, so a terminal status means the
        job has just ended."""
        if row is None:
            return None
        job = Job.from_row(row)
        if job.status.terminal:
            metrics.review_finished(job.status.value, job.created_at)
        elif started and job.status is Status.RUNNING:
            metrics.attempt_started(job.attempts)
        return job
