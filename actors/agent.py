"""ReviewAgent: the pool of stateless review workers, a Ray Serve deployment.

Replicas hold only the jobs they are running right now; Serve scales them on ongoing + queued
requests (the dispatcher's calls), never on CPU.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from ray import serve

from actors import replica_shutdown
from actors.resources import AgentResources
from actors.runner import JobRunner
from graph.builder import build_review_graph
from prreview.config import load_settings

log = logging.getLogger(__name__)


@serve.deployment(name="ReviewAgent", max_ongoing_requests=4, graceful_shutdown_timeout_s=30)
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
        self._heartbeat: asyncio.Task[None] | None = None
        self._drain_watch: asyncio.Task[None] | None = None

    async def _ready(self) -> JobRunner:
        async with self._starting:
            if self._runner is None:
                resources = await AgentResources.open(self._settings)
                self._resources = resources
                self._runner = JobRunner(self._settings, resources.store, build_review_graph(resources.checkpointer),
                                         resources.github, resources.llm, self._owner)
                period = min(1.0, self._settings.lease_s / 3)
                self._heartbeat = asyncio.create_task(self._runner.heartbeat_forever(period))
                self._drain_watch = asyncio.create_task(self._watch_for_shutdown(self._runner))
        return self._runner

    async def _watch_for_shutdown(self, runner: JobRunner) -> None:
        """Scale-in or rolling update: hand running jobs back at their next step boundary, so
        the replica's exit costs no failed attempt and no repeated LLM call."""
        while not replica_shutdown.stopping():
            await asyncio.sleep(0.5)
        log.info("replica shutting down: draining %d review(s)", len(runner.running))
        runner.drain()

    async def run(self, job_id: str) -> str:
        runner = await self._ready()
        return await runner.run(job_id)

    async def __del__(self) -> None:
        if self._runner is not None:
            self._runner.drain()
            await self._runner.wait_idle(timeout_s=self._settings.lease_s)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._resources is not None:
            await self._resources.close()
