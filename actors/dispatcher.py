"""JobDispatcher: moves queued jobs from Postgres to the agent pool and watches every call.

One replica. Its loop claims queued jobs up to the pool's capacity, calls `ReviewAgent.run`, and
when a call fails because its replica died, puts the job straight back on the queue (it resumes
from its last checkpoint). Every few seconds it also runs the reconciler's sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ray import serve
from ray.serve.handle import DeploymentHandle

from actors.reconciler import sweep
from actors.resources import open_store
from prreview import metrics
from prreview.config import load_settings
from prreview.store import JobStore

log = logging.getLogger(__name__)


@serve.deployment(name="JobDispatcher", num_replicas=1, max_ongoing_requests=100)
class JobDispatcher:
    def __init__(self, agent: DeploymentHandle) -> None:
        self._agent = agent
        self._settings = load_settings()
        self._store: JobStore | None = None
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._ensure_loop()

    def _ensure_loop(self) -> None:
        """Start (or restart after a crash) the main loop; Serve's health check calls this too."""
        if self._loop is None or self._loop.done():
            try:
                self._loop = asyncio.get_running_loop().create_task(self._main(), name="dispatch-loop")
            except RuntimeError:
                self._loop = None  # no loop yet (constructor off-loop): the first call starts it

    @property
    def capacity(self) -> int:
        return self._settings.agent_max_replicas * self._settings.agent_max_ongoing

    async def _main(self) -> None:
        self._store = await open_store(self._settings, max_size=4)
        await self._store.resize_llm_slots(self._settings.llm_global_concurrency)
        last_sweep = 0.0
        while True:
            try:
                if time.monotonic() - last_sweep >= self._settings.sweep_interval_s:
                    swept = await sweep(self._store, max_attempts=self._settings.max_attempts,
                                        in_flight=list(self._in_flight))
                    metrics.review_finished("failed", count=len(swept.failed))
                    metrics.review_finished("cancelled", count=len(swept.cancelled))
                    stats = await self._store.queue_stats()
                    metrics.set_queue(stats.queued, stats.running)
                    last_sweep = time.monotonic()
                claimed = await self._store.claim_for_dispatch(self.capacity - len(self._in_flight),
                                                               list(self._in_flight))
                for job_id in claimed:
                    self._in_flight[job_id] = asyncio.create_task(self._call(job_id), name=f"job-{job_id}")
            except asyncio.CancelledError:
                raise
            except Exception:  # keep dispatching through database blips; the sweep repairs the rest
                log.exception("dispatch loop iteration failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.dispatch_poll_s)

    async def _call(self, job_id: str) -> None:
        assert self._store is not None
        try:
            outcome = await self._agent.run.remote(job_id)
            if outcome == "skipped":  # the replica was draining, or the job is no longer queued
                await self._store.release_dispatch(job_id)
                await asyncio.sleep(self._settings.dispatch_poll_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the replica died, or the call never reached one
            log.warning("agent call for %s failed (%s); re-queueing", job_id, type(exc).__name__)
            recovered = await self._store.recover_jobs(max_attempts=self._settings.max_attempts, job_id=job_id,
                                                       only_expired=False)
            await self._store.release_dispatch(job_id)
            for row in recovered:
                if row["status"] != "queued":
                    metrics.review_finished(row["status"])
                await self._store.record_event(job_id, "requeued" if row["status"] == "queued" else row["status"],
                                               {"reason": f"agent replica lost ({type(exc).__name__})"},
                                               progress={"step": "queued"} if row["status"] == "queued" else None)
        finally:
            self._in_flight.pop(job_id, None)
            self._wake.set()

    async def wake(self) -> int:
        """Called by the ingress after a submit, so new work starts without waiting for a poll."""
        self._ensure_loop()
        self._wake.set()
        return len(self._in_flight)

    async def in_flight(self) -> list[str]:
        self._ensure_loop()
        return list(self._in_flight)

    async def check_health(self) -> None:
        self._ensure_loop()
