"""Runs review jobs inside one agent replica: lease, heartbeat, cancellation, drain, checkpoints.

The replica keeps nothing a crash could lose: the job row says who runs it (a lease renewed every
few seconds) and LangGraph's Postgres checkpoints hold every finished step. Whoever runs the job
next resumes from the last checkpoint. A database outage mid-run is waited out: the run goes on
from its last checkpoint once the database answers and the job is still this replica's, and a
worker whose lease lapsed meanwhile stops without writing anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphDrained
from langgraph.runtime import RunControl

from actors.llm_gate import LLMGate
from actors.meter import JobMeter
from graph.builder import ReviewGraph
from graph.context import ReviewContext
from graph.github import GitHubClient, github_wait_budget
from graph.llm import LLMClient
from graph.offload import shared_pool
from graph.state import ReviewState
from graph.tokens import served_context_tokens, tokenizer_counter
from prreview import metrics
from prreview.config import Settings
from prreview.db import is_transient, retry_transient
from prreview.errors import DeadlineExceeded, JobCancelled, PRReviewError
from prreview.lifecycle import Lifecycle
from prreview.store import Job, JobStore

log = logging.getLogger(__name__)

# Seconds between attempts to reach the database again during an outage.
OUTAGE_PROBE_S = 1.0
# The service secret that signs pr-review's markers on GitHub (shared by replicas, kept across restarts).
MARKER_SECRET = "github-markers"


class LeaseLost(Exception):
    """The job is no longer this replica's (its lease lapsed and another worker may own it)."""


@dataclass
class _Run:
    job_id: str
    task: asyncio.Task[dict[str, Any]]
    control: RunControl
    meter: JobMeter
    stop_reason: str | None = None  # "cancelled", "deadline" or "lease_lost" once told to stop


class ProgressRecorder:
    """Writes a job's progress events (the SSE stream and `progress` read them back)."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id

    async def emit(self, kind: str, data: dict[str, Any], *, progress: dict[str, Any] | None = None,
                   files_done_delta: int = 0) -> None:
        await self.store.record_event(self.job_id, kind, data, progress=progress,
                                      files_done_delta=files_done_delta)

    async def head_sha(self, sha: str) -> None:
        await self.store.set_head_sha(self.job_id, sha)


@dataclass(frozen=True)
class ModelLimits:
    count_tokens: Callable[[str], int]
    context_tokens: int


@dataclass
class JobRunner:
    settings: Settings
    store: JobStore
    lifecycle: Lifecycle
    graph: ReviewGraph
    github: GitHubClient
    llm: LLMClient
    gate: LLMGate
    owner: str
    _limits: ModelLimits | None = None
    _marker_key: bytes | None = None
    _runs: dict[str, _Run] = field(default_factory=dict)
    _draining: bool = False

    @property
    def running(self) -> list[str]:
        return list(self._runs)

    async def run(self, job_id: str) -> str:
        """Run (or resume) one job to its end; returns the status it ended in, 'lease_lost', or
        'skipped' when it did not start here (draining, no longer queued, database unreachable)."""
        if self._draining:
            return "skipped"
        try:
            job = await self.lifecycle.start(job_id, owner=self.owner, lease_s=self.settings.lease_s,
                                             deadline_s=self.settings.job_deadline_s,
                                             max_attempts=self.settings.max_attempts)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("could not start review %s: the database is unreachable", job_id)
            return "skipped"
        if job is None:
            return "skipped"  # already running elsewhere, finished, or cancelled meanwhile
        if job.status.terminal:
            return job.status.value  # out of attempts: the start statement failed it
        meter = JobMeter(self.store, job_id, self.settings.job_max_llm_calls, self.settings.job_max_tokens,
                         self.gate, usage=dict(job.usage))
        control = RunControl()
        run = _Run(job_id, asyncio.create_task(self._execute(job, meter, control)), control, meter)
        self._runs[job_id] = run
        try:
            result = await run.task
        except GraphDrained:
            await self._write(lambda: self.lifecycle.requeue(job_id, owner=self.owner,
                                                             reason="agent replica draining"))
            return "queued"
        except asyncio.CancelledError:
            if run.stop_reason is None:
                raise  # our own caller was cancelled: propagate
            return await self._stopped(run)
        except JobCancelled:
            run.stop_reason = run.stop_reason or await self._why_stopped(job_id)
            return await self._stopped(run)
        except LeaseLost:
            return "lease_lost"
        except PRReviewError as exc:
            return await self._fail(job_id, exc)
        except Exception as exc:  # a bug: the job fails with its cause instead of hanging in 'running'
            log.exception("review %s crashed", job_id)
            return await self._fail(job_id, PRReviewError(f"Internal error: {type(exc).__name__}: {exc}"))
        finally:
            self._runs.pop(job_id, None)
        await self._end(job_id, lambda: self.lifecycle.finish(job_id, owner=self.owner, review=result["review"]))
        return "succeeded"

    async def _execute(self, job: Job, meter: JobMeter, control: RunControl) -> dict[str, Any]:
        """The graph run, from the job's last checkpoint if it has one; resumed again after a
        database outage for as long as the job stays this replica's."""
        limits = await self._model_limits()
        if self._marker_key is None:
            self._marker_key = await self.store.service_secret(MARKER_SECRET)
        context = ReviewContext(
            github=await self._github_for(job), llm=self.llm, meter=meter,
            progress=ProgressRecorder(self.store, job.id),
            context_tokens=limits.context_tokens, max_completion_tokens=self.settings.llm_max_tokens,
            max_llm_calls=self.settings.job_max_llm_calls, job_max_tokens=self.settings.job_max_tokens,
            count_tokens=limits.count_tokens, marker_key=self._marker_key,
            cpu=shared_pool(self.settings.cpu_workers), cpu_timeout_s=self.settings.cpu_step_timeout_s,
            snapshots=self.store)
        config: RunnableConfig = {"configurable": {"thread_id": job.id},
                                  "callbacks": [metrics.StepTimer()]}  # per-step duration metrics
        while True:
            try:
                resume = await self._has_checkpoint(job.id)
                graph_input = None if resume else ReviewState(job_id=job.id, repo=job.repo, number=job.number,
                                                              options=job.options)
                # A GitHub rate limit is waited out for as long as the job's deadline allows.
                with github_wait_budget(_monotonic(job.deadline_at)):
                    return await self.graph.ainvoke(graph_input, config, context=context, durability="sync",
                                                    control=control)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("review %s: the database is unreachable (%s); waiting for it", job.id,
                            type(exc).__name__)
                await self._wait_for_database(job.id)

    async def _github_for(self, job: Job) -> GitHubClient:
        """The client this job talks to GitHub with: as a GitHub App, the installation its PR
        belongs to (the job keeps the installation's id, never a token); else the configured token."""
        installation = job.installation_id
        if installation is None:
            owner, repo = job.repo.split("/", 1)
            installation = await self.github.installation_id(owner, repo)
        return self.github.for_installation(installation)

    async def _has_checkpoint(self, job_id: str) -> bool:
        checkpointer = self.graph.checkpointer
        config: RunnableConfig = {"configurable": {"thread_id": job_id}}
        return isinstance(checkpointer, BaseCheckpointSaver) and await checkpointer.aget_tuple(config) is not None

    async def _wait_for_database(self, job_id: str) -> None:
        """Returns once the database answers and the job is still ours; raises LeaseLost if it was
        taken over meanwhile (the new owner goes on from the checkpoints: nothing is written here)."""
        while True:
            try:
                states = await self.lifecycle.heartbeat([job_id], owner=self.owner, lease_s=self.settings.lease_s)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await asyncio.sleep(OUTAGE_PROBE_S)
                continue
            if not states:
                raise LeaseLost(job_id)
            log.info("review %s: the database is back; resuming from the last checkpoint", job_id)
            return

    async def _model_limits(self) -> ModelLimits:
        """The served model's tokenizer and context window, learned once at the first job (not at
        start: the in-cluster LLM app may still be deploying when agents start)."""
        if self._limits is None:
            context = self.settings.llm_context_tokens
            model = self.settings.llm_model
            try:
                card = await self.llm.model_card()
                model = model or str(card["id"])
                context = min(context, served_context_tokens(card) or context)
            except PRReviewError as exc:
                log.warning("no model card from the LLM endpoint (%s); using configured limits", exc.message)
            self._limits = ModelLimits(await asyncio.to_thread(tokenizer_counter, model), context)
        return self._limits

    # --- ends ------------------------------------------------------------------------------------------
    async def _why_stopped(self, job_id: str) -> str:
        """Why the database refused this job another LLM call."""
        states = await self.lifecycle.heartbeat([job_id], owner=self.owner, lease_s=self.settings.lease_s)
        if not states:
            return "lease_lost"
        return "deadline" if states[0].past_deadline and not states[0].cancel_requested else "cancelled"

    async def _stopped(self, run: _Run) -> str:
        reason = run.stop_reason or "cancelled"
        if reason == "lease_lost":
            return "lease_lost"  # another worker owns the job now; write nothing
        if reason == "deadline":
            return await self._fail(run.job_id, DeadlineExceeded(
                f"The review ran past its deadline of {self.settings.job_deadline_s:.0f} s."))
        await self._end(run.job_id, lambda: self.lifecycle.stop_cancelled(run.job_id, owner=self.owner))
        return "cancelled"

    async def _fail(self, job_id: str, exc: PRReviewError) -> str:
        await self._end(job_id, lambda: self.lifecycle.fail(job_id, owner=self.owner, error=exc))
        return "failed"

    async def _end(self, job_id: str, transition: Callable[[], Any]) -> None:
        """A terminal transition (kept through a database blip), then the job's LangGraph thread
        is deleted: the stored review is all that is kept. A thread left behind (the database went
        away again) is removed by the dispatcher's retention sweep."""
        await self._write(transition)
        checkpointer = self.graph.checkpointer
        if isinstance(checkpointer, BaseCheckpointSaver):
            try:
                await checkpointer.adelete_thread(job_id)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("checkpoints of %s left for the retention sweep: %s", job_id, type(exc).__name__)

    async def _write(self, transition: Callable[[], Any]) -> Any:
        return await retry_transient(transition, within_s=self.settings.lease_s)

    # --- told from outside -------------------------------------------------------------------------------
    def stop(self, job_id: str, reason: str) -> None:
        """Stop a run now (cancel request, deadline, lease lost): cancelling its task aborts its
        in-flight LLM request, so vLLM stops generating for it."""
        run = self._runs.get(job_id)
        if run is not None and run.stop_reason is None and not run.task.done():
            log.info("stopping review %s: %s", job_id, reason)
            run.stop_reason = reason
            run.meter.cancelled = True
            run.task.cancel()

    async def heartbeat_once(self) -> None:
        """Renew every lease; stop runs that were cancelled, timed out, or taken over (the
        fallback for a cancel notification that was lost)."""
        states = {s.job_id: s for s in await self.lifecycle.heartbeat(
            list(self._runs), owner=self.owner, lease_s=self.settings.lease_s)}
        for job_id in list(self._runs):
            state = states.get(job_id)
            reason = ("lease_lost" if state is None else "cancelled" if state.cancel_requested
                      else "deadline" if state.past_deadline else None)
            if reason:
                self.stop(job_id, reason)

    async def heartbeat_forever(self, period_s: float) -> None:
        while True:
            try:
                await self.heartbeat_once()
            except Exception as exc:  # the database may blip; the lease outlives a few missed beats
                if is_transient(exc):
                    log.warning("heartbeat failed: the database is unreachable (%s)", type(exc).__name__)
                else:
                    log.exception("heartbeat failed")
            await asyncio.sleep(period_s)

    def drain(self, reason: str = "replica shutting down") -> None:
        """Stop taking jobs; running ones stop at their next step boundary and go back to the queue."""
        self._draining = True
        for run in self._runs.values():
            run.control.request_drain(reason)

    async def wait_idle(self, timeout_s: float) -> None:
        tasks = [run.task for run in self._runs.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)


def _monotonic(at: datetime | None) -> float | None:
    """A wall-clock instant as a `time.monotonic()` value."""
    return None if at is None else time.monotonic() + (at - datetime.now(UTC)).total_seconds()
