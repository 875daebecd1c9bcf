"""Reads and progress writes of jobs, batches and events, by named query. Status changes are not
here: they are the lifecycle's (prreview/lifecycle.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from prreview.models import ReviewResource, Status
from prreview.sql import queries

log = logging.getLogger(__name__)

Row = dict[str, Any]


def options_hash(options: dict[str, Any]) -> str:
    """Stable digest of review options: part of the idempotency key."""
    return hashlib.sha256(json.dumps(options, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Job:
    """A review job as stored (the `jobs` table)."""

    id: str
    pr_url: str
    repo: str
    number: int
    head_sha: str | None
    status: Status
    attempts: int
    options: dict[str, Any]
    progress: dict[str, Any]
    usage: dict[str, int]
    review: dict[str, Any] | None
    error: dict[str, str] | None
    cancel_requested: bool
    lease_owner: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    deadline_at: datetime | None
    submitted_by: str
    installation_id: int | None

    @classmethod
    def from_row(cls, row: Row) -> Job:
        values = {f.name: row[f.name] for f in fields(cls)}
        return cls(**{**values, "id": str(row["id"]), "status": Status(row["status"])})

    def resource(self) -> ReviewResource:
        """The public review resource (the contract's shape)."""
        return ReviewResource.model_validate({
            "id": self.id, "pr_url": self.pr_url, "repo": self.repo, "number": self.number,
            "head_sha": self.head_sha, "status": self.status, "attempts": self.attempts,
            "created_at": self.created_at, "updated_at": self.updated_at, "progress": self.progress,
            "usage": self.usage, "review": self.review, "error": self.error, "options": self.options})


@dataclass(frozen=True)
class NewJob:
    """A review to queue. `head_sha` is known up front for webhook reviews (each push is its own
    review, so it is part of the idempotency key); `submitted_by` scopes the key to its submitter."""

    pr_url: str
    repo: str
    number: int
    options: dict[str, Any]
    submitted_by: str = "local"
    head_sha: str | None = None
    installation_id: int | None = None

    @property
    def key(self) -> str:
        """The idempotency key: at most one queued or running job has it. GitHub treats owner and
        repository names case-insensitively, and so does the key."""
        key = f"{self.submitted_by}:{self.repo.lower()}#{self.number}:{options_hash(self.options)}"
        return f"{key}@{self.head_sha}" if self.head_sha else key


@dataclass(frozen=True)
class SubmitterUsage:
    active: int  # queued or running
    last_hour: int  # submitted in the last hour
    window_frees_in_s: float  # until the oldest of the last hour's submissions leaves the window


@dataclass(frozen=True)
class QueueStats:
    queued: int
    running: int
    succeeded: int  # finished in the last 24 hours, as the two below
    failed: int
    cancelled: int


class Statements:
    """Runs the named queries of queries.sql: each on a connection of the pool, or all on one
    connection inside a transaction (`transaction()`)."""

    def __init__(self, pool: AsyncConnectionPool, conn: AsyncConnection[Any] | None = None) -> None:
        self.pool = pool
        self._conn = conn

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self._conn is not None:
            yield self._conn
        else:
            async with self.pool.connection() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Statements]:
        """Statements that commit together, or not at all."""
        async with self.pool.connection() as conn, conn.transaction():
            yield Statements(self.pool, conn)

    async def one(self, query: str, /, **params: Any) -> Row | None:
        rows = await self._to_completion(self._run(query, params))
        return rows[0] if rows else None

    async def all(self, query: str, /, **params: Any) -> list[Row]:
        return await self._to_completion(self._run(query, params))

    async def _run(self, query: str, params: dict[str, Any]) -> list[Row]:
        async with self._connection() as conn:
            cur = await conn.execute(queries()[query], params)
            return await cur.fetchall() if cur.description else []

    async def _to_completion(self, statement: Coroutine[Any, Any, list[Row]]) -> list[Row]:
        """Runs a pooled statement to its end even when the caller is cancelled (a client that
        hung up, a review being stopped). A cancellation landing inside psycopg closes the
        connection mid-query, and inside psycopg_pool's checks it has stranded connections
        (psycopg#1345, #1401); seen here once: a GET waiting the pool's full 5 s right after a
        client hung up on a POST. The statement is short; the caller gets its CancelledError at
        once. Inside a caller's transaction, the caller owns the connection."""
        if self._conn is not None:
            return await statement
        task = asyncio.ensure_future(statement)
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Marks a statement's error as seen: one whose caller has gone is logged here instead of
    warned about as never retrieved."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("a statement whose caller had gone failed: %s", type(exc).__name__)


class JobStore:
    """Reads of jobs, events and batches; the progress of running jobs; the LLM slots; the PR
    snapshots and the service's own secrets. Holds no state but the pool."""

    def __init__(self, pool: AsyncConnectionPool, sql: Statements | None = None) -> None:
        self.pool = pool
        self.sql = sql or Statements(pool)

    # --- read -----------------------------------------------------------------------------------
    async def get_job(self, job_id: str) -> Job | None:
        parsed = parse_id(job_id)
        row = await self.sql.one("get_job", id=parsed) if parsed else None
        return Job.from_row(row) if row else None

    async def find_reusable_job(self, job: NewJob) -> Job | None:
        """The active job for this key, else its latest succeeded one."""
        row = await self.sql.one("find_reusable_job", key=job.key)
        return Job.from_row(row) if row else None

    async def latest_succeeded(self, keys: list[str]) -> dict[str, Job]:
        """Job key -> its latest succeeded job, for the keys that have one."""
        return {r["job_key"]: Job.from_row(r) for r in await self.sql.all("latest_succeeded", keys=keys)}

    async def find_active_job(self, job: NewJob) -> Job | None:
        row = await self.sql.one("find_active_job", key=job.key)
        return Job.from_row(row) if row else None

    async def list_jobs(self, *, status: str | None, limit: int, submitted_by: str | None = None) -> list[Job]:
        """Newest first; only `submitted_by`'s when given."""
        rows = await self.sql.all("list_jobs", status=status, limit=limit, submitted_by=submitted_by)
        return [Job.from_row(r) for r in rows]

    async def submitter_usage(self, submitted_by: str) -> SubmitterUsage:
        row = await self.sql.one("submitter_usage", submitted_by=submitted_by)
        assert row is not None
        return SubmitterUsage(int(row["active"]), int(row["last_hour"]), float(row["window_frees_in_s"] or 0.0))

    async def events_after(self, job_id: str, after_id: int, limit: int = 200) -> list[Row]:
        return await self.sql.all("events_after", job_id=job_id, after_id=after_id, limit=limit)

    async def queue_stats(self) -> QueueStats:
        row = await self.sql.one("queue_stats")
        assert row is not None
        return QueueStats(**row)

    async def recent_failures(self, limit: int = 5) -> list[Row]:
        return await self.sql.all("recent_failures", limit=limit)

    async def get_batch(self, batch_id: str) -> Row | None:
        parsed = parse_id(batch_id)
        return await self.sql.one("get_batch", id=parsed) if parsed else None

    async def batch_items(self, batch_id: str) -> list[Row]:
        return await self.sql.all("batch_items", batch_id=batch_id)

    # --- progress of a running job ----------------------------------------------------------------
    async def record_event(self, job_id: str, kind: str, data: dict[str, Any], *,
                           progress: dict[str, Any] | None = None, files_done_delta: int = 0) -> Row | None:
        """Append a progress event; returns {event_id, progress, usage} after it, None for an unknown job."""
        return await self.sql.one("record_event", job_id=job_id, kind=kind, data=Jsonb(data),
                                  progress=Jsonb(progress) if progress is not None else None,
                                  files_done_delta=files_done_delta)

    async def set_head_sha(self, job_id: str, head_sha: str) -> None:
        await self.sql.one("set_head_sha", id=job_id, head_sha=head_sha)

    async def add_tokens(self, job_id: str, *, prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        row = await self.sql.one("add_tokens", id=job_id, prompt_tokens=prompt_tokens,
                                 completion_tokens=completion_tokens)
        return dict(row["usage"]) if row else {}

    # --- LLM calls: counted, capped, cancellable ---------------------------------------------------
    async def begin_llm_call(self, *, job_id: str, owner: str, holder: str, gated: bool,
                             hold_s: float) -> Row:
        """{allowed, slot, usage}: see the query's comment in queries.sql."""
        row = await self.sql.one("begin_llm_call", job_id=job_id, owner=owner, holder=holder, gated=gated,
                                 hold_s=hold_s)
        assert row is not None
        return row

    async def release_llm_slot(self, slot: int, *, holder: str) -> None:
        await self.sql.one("release_llm_slot", slot=slot, holder=holder)

    async def resize_llm_slots(self, slots: int) -> None:
        await self.sql.one("resize_llm_slots", slots=slots)

    async def llm_slots_in_use(self) -> int:
        row = await self.sql.one("llm_slots_in_use")
        return int(row["in_use"]) if row else 0

    # --- PR snapshots: a PR as fetched, stored once per head commit ---------------------------------
    async def save_pr_snapshot(self, repo: str, number: int, head_sha: str, data: dict[str, Any]) -> None:
        await self.sql.one("save_pr_snapshot", repo=repo, number=number, head_sha=head_sha, data=Jsonb(data))

    async def load_pr_snapshot(self, repo: str, number: int, head_sha: str) -> dict[str, Any] | None:
        row = await self.sql.one("load_pr_snapshot", repo=repo, number=number, head_sha=head_sha)
        return dict(row["data"]) if row else None

    # --- the service's own secrets --------------------------------------------------------------------
    async def service_secret(self, name: str) -> bytes:
        """A random 32-byte secret shared by every replica, made on first use."""
        for _ in range(2):  # a concurrent first use may hide its row from this statement: ask again
            row = await self.sql.one("service_secret", name=name, value=secrets.token_bytes(32))
            if row is not None:
                return bytes(row["value"])
        raise RuntimeError(f"service secret {name!r} could not be read")
