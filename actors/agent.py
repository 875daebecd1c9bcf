"""ReviewAgent: the pool of stateless review workers, a Ray Serve deployment.

Replicas hold only the jobs they are running right now; Serve scales them on ongoing + queued
requests (the dispatcher's calls), never on CPU. Replica counts, `max_ongoing_requests` and
autoscaling come from serve_config.yaml only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from ray import serve

from actors import replica_shutdown
from actors.llm_gate import LLMGate, global_slots
from actors.resources import AgentResources
from actors.runner import JobRunner
from graph.builder import build_review_graph
from prreview import metrics, notify
from prreview.config import load_settings
from prreview.db import is_transient

log = logging.getLogger(__name__)


@serve.deployment(name="ReviewAgent")
class ReviewAgent:
    def __init__(self) -> None:
        self._settings = load_settings()
        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside Serve (unit tests)
            replica = "local"
        self._owner = f"{replica}:{uuid.uuid4().hex[:8]}"
        if replica != "local":
            replica_shutdown.install_hook()
        self._runner: JobRunner | None = None
        self._resources: AgentResources | None = None
        self._starting = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def _ready(self) -> JobRunner:
        async with self._starting:
            if self._runner is None:
                resources = await AgentResources.open(self._settings)
                db = resources.db
                gate = LLMGate(db.store, self._owner, global_slots(self._settings),
                               hold_s=self._settings.llm_timeout_s + 10)
                runner = JobRunner(self._settings, db.store, db.lifecycle, build_review_graph(resources.checkpointer),
                                   resources.github, resources.llm, gate, self._owner)
                # Pushed: a cancel reaches the run at once, a freed LLM slot wakes the waiters.
                db.listener.subscribe(notify.CANCEL, lambda job_id: runner.stop(job_id, "cancelled"))
                db.listener.subscribe(notify.LLM_SLOTS, lambda _: gate.freed.notify())
                db.listener.on_reconnect(gate.freed.notify)
                db.listener.start()
                period = min(1.0, self._settings.lease_s / 3)
                self._tasks = [asyncio.create_task(runner.heartbeat_forever(period), name="heartbeat"),
                               asyncio.create_task(self._watch_for_shutdown(runner), name="drain-watch"),
                               metrics.watch_event_loop_lag()]
                self._resources, self._runner = resources, runner
        return self._runner

    async def _watch_for_shutdown(self, runner: JobRunner) -> None:
        """Scale-in or rolling update: hand running jobs back at their next step boundary, so
        the replica's exit costs no failed attempt and no repeated LLM call."""
        while not replica_shutdown.stopping():
            await asyncio.sleep(0.5)
        log.info("replica shutting down: draining %d review(s)", len(runner.running))
        runner.drain()

    async def run(self, job_id: str) -> str:
        try:
            runner = await self._ready()
        except Exception as exc:
            # A replica that starts while the database is away (the autoscaler added it during a
            # failover) cannot open its pool yet: the job did not start here, so it goes back to the
            # queue, as when `start` itself is unreachable. Raising instead read as a lost replica.
            if not is_transient(exc):
                raise
            log.warning("review %s not started: the database is unreachable (%s)", job_id, type(exc).__name__)
            return "skipped"
        return await runner.run(job_id)

    async def __del__(self) -> None:
        if self._runner is not None:
            self._runner.drain()
            await self._runner.wait_idle(timeout_s=self._settings.lease_s)
        for task in self._tasks:
            task.cancel()
        if self._resources is not None:
            await self._resources.close()
