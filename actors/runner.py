"""Runs review jobs inside one agent replica: lease, heartbeat, cancellation, drain, checkpoints.

The replica keeps nothing a crash could lose: the job row says who runs it (a lease renewed every
few seconds) and LangGraph's Postgres checkpoints hold every finished step. Whoever runs the job
next resumes from the last checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphDrained
from langgraph.runtime import RunControl

from actors.llm_gate import LLMGate
from actors.meter import JobMeter
from graph.builder import ReviewGraph
from graph.context import ReviewContext
from graph.github import GitHubClient
from graph.llm import LLMClient
from graph.state import ReviewState
from graph.tokens import served_context_tokens, tokenizer_counter
from prreview import metrics
from prreview.config import Settings
from prreview.errors import DeadlineExceeded, JobCancelled, PRReviewError
from prreview.store import JobStore

log = logging.getLogger(__name__)


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
    graph: ReviewGraph
    github: GitHubClient
    llm: LLMClient
    owner: str
    _limits: ModelLimits | None = None
    _runs: dict[str, _Run] = field(default_factory=dict)
    _gate: LLMGate | None = None
    _draining: bool = False

    @property
    def running(self) -> list[str]:
        return list(self._runs)

    async def run(self, job_id: str) -> str:
        """Run (or resume) one job to its end; returns the status it ended in, or 'skipped'."""
        if self._draining:
            return "skipped"
        row = await self.store.start_job(job_id, owner=self.owner, lease_s=self.settings.lease_s,
                                         deadline_s=self.settings.job_deadline_s)
        if row is None:
            return "skipped"  # already running elsewhere, finished, or cancelled meanwhile
        if row["attempts"] > self.settings.max_attempts:
            return await self._finish_failed(job_id, PRReviewError(
                f"The review was stopped after {row['attempts'] - 1} attempts."), code="max_attempts_exceeded")
        await self.store.record_event(job_id, "started", {"attempt": row["attempts"]},
                                      progress={"step": "starting"})
        metrics.attempt_started(row["attempts"])
        if self._gate is None:
            self._gate = LLMGate(self.store, self.owner, hold_s=self.settings.llm_timeout_s + 10)
        limits = await self._model_limits()
        meter = JobMeter(self.store, job_id, self.settings.job_max_llm_calls, self.settings.job_max_tokens,
                         self._gate, usage=dict(row["usage"]))
        context = ReviewContext(
            github=self.github, llm=self.llm, meter=meter, progress=ProgressRecorder(self.store, job_id),
            context_tokens=limits.context_tokens, max_completion_tokens=self.settings.llm_max_tokens,
            max_llm_calls=self.settings.job_max_llm_calls, job_max_tokens=self.settings.job_max_tokens,
            count_tokens=limits.count_tokens)
        config: RunnableConfig = {"configurable": {"thread_id": job_id}}
        checkpointer = self.graph.checkpointer
        resume = isinstance(checkpointer, BaseCheckpointSaver) and await checkpointer.aget_tuple(config) is not None
        graph_input = None if resume else ReviewState(job_id=job_id, repo=row["repo"], number=row["number"],
                                                      options=row["options"])
        control = RunControl()
        timed: RunnableConfig = {**config, "callbacks": [metrics.StepTimer()]}  # per-step duration metrics
        task = asyncio.create_task(self.graph.ainvoke(graph_input, timed, context=context,
                                                      durability="sync", control=control))
        run = _Run(job_id, task, control, meter)
        self._runs[job_id] = run
        try:
            result = await task
        except GraphDrained:
            await self.store.return_to_queue(job_id, owner=self.owner)
            await self.store.record_event(job_id, "requeued", {"reason": "agent replica draining"},
                                          progress={"step": "queued"})
            return "queued"
        except asyncio.CancelledError:
            if run.stop_reason is None:
                raise  # our own caller was cancelled: propagate
            return await self._stopped(run)
        except JobCancelled:
            return await self._stopped(run)
        except PRReviewError as exc:
            return await self._finish_failed(job_id, exc)
        except Exception as exc:  # a bug: the job fails with its cause instead of hanging in 'running'
            log.exception("review %s crashed", job_id)
            await self._finish_failed(job_id, PRReviewError(f"Internal error: {type(exc).__name__}: {exc}"))
            return "failed"
        finally:
            self._runs.pop(job_id, None)
        row = await self.store.finish_job(job_id, owner=self.owner, status="succeeded", review=result["review"])
        if row is not None:
            await self.store.record_event(job_id, "succeeded", {"verdict": result["review"]["verdict"],
                                                                "findings": len(result["review"]["findings"])})
            metrics.review_finished("succeeded", row["created_at"])
        return "succeeded"

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

    async def _stopped(self, run: _Run) -> str:
        reason = run.stop_reason or "cancelled"
        if reason == "lease_lost":
            return "lease_lost"  # another worker owns the job now; write nothing
        if reason == "deadline":
            return await self._finish_failed(run.job_id, DeadlineExceeded(
                f"The review ran past its deadline of {self.settings.job_deadline_s:.0f} s."))
        row = await self.store.finish_job(run.job_id, owner=self.owner, status="cancelled",
                                          error={"code": "cancelled", "message": "The review was cancelled."})
        if row is not None:
            await self.store.record_event(run.job_id, "cancelled", {})
            metrics.review_finished("cancelled", row["created_at"])
        return "cancelled"

    async def _finish_failed(self, job_id: str, exc: PRReviewError, *, code: str | None = None) -> str:
        error = {"code": code or exc.code, "message": exc.message}
        row = await self.store.finish_job(job_id, owner=self.owner, status="failed", error=error)
        if row is not None:
            await self.store.record_event(job_id, "failed", {"error": error})
            metrics.review_finished("failed", row["created_at"])
        return "failed"

    async def heartbeat_once(self) -> None:
        """Renew every lease; stop runs that were cancelled, timed out, or taken over."""
        states = {s.job_id: s for s in await self.store.renew_leases(
            list(self._runs), owner=self.owner, lease_s=self.settings.lease_s)}
        for job_id, run in list(self._runs.items()):
            state = states.get(job_id)
            reason = ("lease_lost" if state is None else "cancelled" if state.cancel_requested
                      else "deadline" if state.past_deadline else None)
            if reason and run.stop_reason is None and not run.task.done():
                log.info("stopping review %s: %s", job_id, reason)
                run.stop_reason = reason
                run.meter.cancelled = True
                run.task.cancel()  # aborts the in-flight LLM request: vLLM stops generating

    async def heartbeat_forever(self, period_s: float) -> None:
        while True:
            try:
                await self.heartbeat_once()
            except Exception:  # the database may blip; the lease outlives a few missed beats
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
