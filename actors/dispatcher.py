"""JobDispatcher: moves queued jobs from Postgres to the agent pool and watches every call.

One replica. Woken by the database the moment a job enters the queue (NOTIFY), it claims queued
jobs and calls `ReviewAgent.run` for each, as many as Serve accepts: the agent deployment's
`max_ongoing_requests` per running replica plus its `max_queued_requests` (serve_config.yaml, the
one source, read back from Serve as applied), so it claims no job that would not fit. A call Serve
still refuses (a replica just went away) goes back to the queue until a call ends. The calls Serve
queues are what its autoscaler scales the pool on. When a call fails because its
replica died, the job goes straight back to the queue (it resumes from its last checkpoint).
Every few seconds it also runs the reconciler's sweep, and now and then the retention.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from typing import Any

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from actors.llm_gate import global_slots
from actors.reconciler import retention, sweep
from actors.resources import Database
from prreview import metrics, notify
from prreview.config import load_settings
from prreview.db import is_transient

log = logging.getLogger(__name__)

CLAIM_BATCH = 8  # jobs claimed per round; Serve's backpressure says when the pool is full
RETENTION_INTERVAL_S = 3600.0


@serve.deployment(name="JobDispatcher")
class JobDispatcher:
    def __init__(self, agent: DeploymentHandle) -> None:
        self._agent = agent
        self._settings = load_settings()
        self._db: Database | None = None
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._pool_full = False
        self._bound: int | None = None  # calls Serve accepts for the pool now; None: unknown
        self._db_trouble = False  # a statement failed (database unreachable) since the last sweep
        self._recover_after = -math.inf  # expired leases are not recovered before this (time.monotonic())
        self._loop: asyncio.Task[None] | None = None
        self._ensure_loop()

    def _ensure_loop(self) -> None:
        """Start (or restart after a crash) the main loop; Serve's health check calls this too."""
        if self._loop is None or self._loop.done():
            try:
                self._loop = asyncio.get_running_loop().create_task(self._main(), name="dispatch-loop")
            except RuntimeError:
                self._loop = None  # no loop yet (constructor off-loop): the first health check starts it

    async def _open(self) -> Database:
        db = await Database.open(self._settings, max_size=4)
        slots = global_slots(self._settings)
        if slots is not None:
            await db.store.resize_llm_slots(slots)
        db.listener.subscribe(notify.JOBS, lambda _: self._wake.set())
        db.listener.on_reconnect(self._wake.set)
        db.listener.start()
        metrics.watch_event_loop_lag()
        return db

    async def _main(self) -> None:
        while self._db is None:
            try:
                self._db = await self._open()
            except Exception as exc:
                log.warning("dispatcher cannot open the database yet: %s", exc)
                await asyncio.sleep(2)
        db = self._db
        checkpointer = AsyncPostgresSaver(conn=db.pool)  # type: ignore[arg-type]
        # Both run at once at start, then on their period. (Not measured from 0: time.monotonic() is
        # the machine's uptime, so "due at start" would depend on how long ago the machine booted.)
        last_sweep = last_retention = -math.inf
        while True:
            now = time.monotonic()
            if now - last_sweep >= self._settings.sweep_interval_s:
                last_sweep = now
                await self._step("sweep", self._sweep(db))
                await self._step("pool bound", self._refresh_bound())
            if not self._pool_full:
                await self._step("dispatch", self._dispatch(db))
            if now - last_retention >= RETENTION_INTERVAL_S:
                # Set first: a failing retention waits for its next turn instead of running (and failing)
                # on every wake. Each step is guarded on its own: a broken retention query once stopped
                # every claim, since they shared one try block.
                last_retention = now
                await self._step("retention", retention(db.lifecycle, checkpointer,
                                                   retention_days=self._settings.retention_days))
            # Pushed: a new job, a finished call; the timeout is only the fallback for the sweep.
            await notify.wait(self._wake, self._settings.sweep_interval_s)

    async def _sweep(self, db: Database) -> None:
        started = time.monotonic()
        swept = await sweep(db.lifecycle, db.store, max_attempts=self._settings.max_attempts,
                            tracked=list(self._in_flight), may_recover=lambda: self._may_recover(started))
        metrics.set_queue(*swept.stats)
        self._pool_full = False  # probe the pool again now and then, whatever happened

    def _may_recover(self, sweep_started: float) -> bool:
        """Whether expired leases mean lost workers (asked once this sweep's first statement has been
        answered). Not right after an outage: leases expire while the database is away although their
        workers are fine and waiting for it, and recovering those jobs the moment it is back would
        restart them elsewhere (an attempt spent, finished LLM calls not yet checkpointed paid again),
        racing the workers' first heartbeat. So after an outage seen here (a statement failed, or this
        one waited longer than a heartbeat period for the database), expired leases are left alone for
        one lease length, time for every live worker to renew; the dead ones' leases still expire
        then and are recovered."""
        now = time.monotonic()
        if self._db_trouble or now - sweep_started > self._settings.lease_s / 3:
            self._recover_after = now + self._settings.lease_s
            log.warning("the database was out of reach: expired leases are recovered in %.0f s",
                        self._settings.lease_s)
        self._db_trouble = False
        return now >= self._recover_after

    async def _refresh_bound(self) -> None:
        try:
            details = await asyncio.to_thread(_serve_details)
        except Exception as exc:  # the controller is busy or restarting: Serve's backpressure still bounds us
            log.info("no Serve details for the agent pool's bound: %s: %s", type(exc).__name__, exc)
            self._bound = None
            return
        self._bound = pool_bound(details, self._agent.app_name, self._agent.deployment_name)

    async def _dispatch(self, db: Database) -> None:
        """Claim and call as many queued jobs as the pool has room for: no job is marked dispatched
        that Serve would refuse (it would only be released again), and the calls that wait in
        Serve's queue are the ones its autoscaler scales the pool on."""
        while True:
            # Bound unknown (no answer from Serve yet): one batch per wake, and Serve's backpressure says stop.
            room = CLAIM_BATCH if self._bound is None else min(CLAIM_BATCH, self._bound - len(self._in_flight))
            jobs = await db.lifecycle.claim(room, exclude=list(self._in_flight))
            for job in jobs:
                self._in_flight[job.id] = asyncio.create_task(self._call(job.id), name=f"job-{job.id}")
            if self._bound is None or room <= 0 or len(jobs) < room or self._pool_full:
                return

    async def _call(self, job_id: str) -> None:
        assert self._db is not None
        lifecycle = self._db.lifecycle
        try:
            outcome = await self._agent.run.remote(job_id)
            if outcome == "skipped":  # the replica was draining, or the job is no longer queued
                await lifecycle.release(job_id)
        except asyncio.CancelledError:
            raise
        except BackPressureError:  # the pool is full: this job waits in the queue for a free place
            self._pool_full = True
            await self._quietly(lifecycle.release(job_id))
            return
        except Exception as exc:  # the replica died, or the call never reached one
            log.warning("agent call for %s failed (%s); re-queueing", job_id, type(exc).__name__)
            await self._quietly(lifecycle.recover(max_attempts=self._settings.max_attempts, job_id=job_id,
                                                  only_expired=False,
                                                  reason=f"agent replica lost ({type(exc).__name__})"))
            await self._quietly(lifecycle.release(job_id))
        finally:
            self._in_flight.pop(job_id, None)
        self._pool_full = False  # a call ended: there is room again
        self._wake.set()

    @staticmethod
    async def _quietly(operation: object) -> None:
        """A repair write; if the database is unreachable, the sweep repeats it later."""
        try:
            await operation  # type: ignore[misc]
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("repair write deferred to the sweep: the database is unreachable")

    async def _step(self, what: str, step: Awaitable[object]) -> None:
        """One step of the dispatch loop. Its failure is logged and never stops the other steps; the
        next round tries again (the sweep repairs whatever a database blip left half done)."""
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_transient(exc):
                self._db_trouble = True
                log.warning("dispatch loop, %s: the database is unreachable (%s)", what, type(exc).__name__)
            else:
                log.exception("dispatch loop, %s failed", what)

    async def check_health(self) -> None:
        self._ensure_loop()


def _serve_details() -> dict[str, Any]:
    """Serve's own view of every application (ServeInstanceDetails: what `serve status` and
    `GET /api/serve/applications/` show), from the controller. Blocking: run it in a thread. Ray has
    no public Python call for a deployment's applied options, so this uses the client Serve's own
    `serve.status()` uses."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("no Serve controller to ask")
    return dict(client.get_serve_details())


def pool_bound(details: dict[str, Any], app: str, deployment: str) -> int | None:
    """The calls Serve accepts for `deployment` right now, from the options serve_config.yaml gave
    it: `max_ongoing_requests` per running replica plus the caller's `max_queued_requests` (only the
    dispatcher calls the pool). None when Serve does not say, or the queue is unbounded."""
    entry = (((details.get("applications") or {}).get(app) or {}).get("deployments") or {}).get(deployment)
    if not entry:
        return None
    config = entry.get("deployment_config") or {}
    ongoing, queued = config.get("max_ongoing_requests"), config.get("max_queued_requests")
    if not isinstance(ongoing, int) or not isinstance(queued, int) or queued < 0:
        return None
    running = sum(1 for replica in entry.get("replicas") or [] if replica.get("state") == "RUNNING")
    return running * ongoing + queued
