"""pr-review's metrics, exported through Ray's metrics system.

They show in the Ray dashboard's metrics views and on every node's Prometheus endpoint, where Ray
prefixes each name with `ray_` (`ray_pr_review_reviews_submitted_total`); inside a Serve replica
`ray.serve.metrics` adds the `application`, `deployment` and `replica` tags.
`cluster/grafana/pr-review-dashboard.json` charts them.

Each process defines its metrics on first use, and only once Ray is initialised: every function
here is a no-op elsewhere (unit tests, the CLI). Recording never raises into the caller, since a
metric must not fail a review.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

log = logging.getLogger(__name__)

__all__ = [
    "StepTimer",
    "attempt_started",
    "llm_call",
    "review_finished",
    "review_submitted",
    "set_queue",
    "watch_event_loop_lag",
]

STEP_BOUNDARIES_S = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]
REVIEW_BOUNDARIES_S = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0]
LLM_BOUNDARIES_S = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]


@dataclass(frozen=True)
class _Metrics:
    submitted: Any
    finished: Any
    attempts: Any
    queue_depth: Any
    running: Any
    llm_calls: Any
    llm_tokens: Any
    llm_seconds: Any
    step_seconds: Any
    review_seconds: Any
    loop_lag: Any


_lock = threading.Lock()
_defined: _Metrics | None = None
_warned = False


def _define() -> _Metrics:
    from ray.serve import metrics as serve_metrics

    m: Any = serve_metrics  # its annotations allow one tag key only (tuple[str]); Ray takes any number

    return _Metrics(
        submitted=m.Counter("pr_review_reviews_submitted_total",
                            description="Reviews accepted as new jobs (duplicates of known ones excluded)."),
        finished=m.Counter("pr_review_reviews_finished_total", tag_keys=("status",),
                           description="Reviews that ended, by status: succeeded, failed or cancelled."),
        attempts=m.Counter("pr_review_review_attempts_total", tag_keys=("kind",),
                           description="Executions of a review started; kind=retry after a recovery."),
        queue_depth=m.Gauge("pr_review_queue_depth", description="Reviews waiting in the queue."),
        running=m.Gauge("pr_review_reviews_running", description="Reviews being run by the agent pool."),
        llm_calls=m.Counter("pr_review_llm_calls_total", tag_keys=("model", "outcome"),
                            description="Chat completions sent to the LLM; outcome is ok or error."),
        llm_tokens=m.Counter("pr_review_llm_tokens_total", tag_keys=("model", "kind"),
                             description="Tokens the LLM reported, kind=prompt or completion."),
        llm_seconds=m.Histogram("pr_review_llm_call_duration_seconds", boundaries=LLM_BOUNDARIES_S,
                                tag_keys=("model",), description="Wall time of one LLM request, seconds."),
        step_seconds=m.Histogram("pr_review_step_duration_seconds", boundaries=STEP_BOUNDARIES_S,
                                 tag_keys=("step", "outcome"),
                                 description="Wall time of one review-graph step (a node run), seconds."),
        review_seconds=m.Histogram("pr_review_review_duration_seconds", boundaries=REVIEW_BOUNDARIES_S,
                                   tag_keys=("status",),
                                   description="Submit to end of a review, queue wait included, seconds."),
        loop_lag=m.Gauge("pr_review_event_loop_lag_seconds",
                         description="How late the process's event loop ran a timer, seconds: the worst "
                                     "in the last few seconds (0 when nothing blocks it)."),
    )


def _metrics() -> _Metrics | None:
    global _defined
    if _defined is not None:
        return _defined
    import ray

    if not ray.is_initialized():
        return None
    with _lock:
        if _defined is None:
            _defined = _define()
    return _defined


def _record(action: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    global _warned
    try:
        fn(*args, **kwargs)
    except Exception:  # metrics are best effort; say so once per process, never fail the caller
        if not _warned:
            _warned = True
            log.warning("recording metric %s failed; further failures are not logged", action, exc_info=True)


# --- what the service records -------------------------------------------------------------------
def review_submitted(count: int = 1) -> None:
    if count > 0 and (m := _metrics()) is not None:
        _record("submitted", m.submitted.inc, count)


def review_finished(status: str, created_at: datetime | None = None, count: int = 1) -> None:
    """A review ended as `status`; with `created_at`, its submit-to-end time is observed too."""
    if count <= 0 or (m := _metrics()) is None:
        return
    _record("finished", m.finished.inc, count, tags={"status": status})
    if created_at is not None:
        seconds = (datetime.now(UTC) - created_at).total_seconds()
        _record("review_seconds", m.review_seconds.observe, max(seconds, 0.0), tags={"status": status})


def attempt_started(attempt: int) -> None:
    if (m := _metrics()) is not None:
        _record("attempts", m.attempts.inc, 1, tags={"kind": "first" if attempt <= 1 else "retry"})


def set_queue(queued: int, running: int) -> None:
    if (m := _metrics()) is not None:
        _record("queue_depth", m.queue_depth.set, queued)
        _record("running", m.running.set, running)


def llm_call(model: str, *, ok: bool, seconds: float, prompt_tokens: int = 0,
             completion_tokens: int = 0) -> None:
    if (m := _metrics()) is None:
        return
    _record("llm_calls", m.llm_calls.inc, 1, tags={"model": model, "outcome": "ok" if ok else "error"})
    _record("llm_seconds", m.llm_seconds.observe, seconds, tags={"model": model})
    for kind, tokens in (("prompt", prompt_tokens), ("completion", completion_tokens)):
        if tokens > 0:
            _record("llm_tokens", m.llm_tokens.inc, tokens, tags={"model": model, "kind": kind})


def step_finished(step: str, seconds: float, *, ok: bool) -> None:
    if (m := _metrics()) is not None:
        _record("step_seconds", m.step_seconds.observe, seconds,
                tags={"step": step, "outcome": "ok" if ok else "error"})


class StepTimer(BaseCallbackHandler):
    """Times each node of the review graph; pass one per run in the graph's `callbacks` config.

    LangGraph reports every node run as a chain whose name is the node's name; routing functions
    and channel writes are chains too, so only runs named like their `langgraph_node` count.
    """

    run_inline = True  # called on the graph's event loop, not in a thread pool

    def __init__(self) -> None:
        self._started: dict[UUID, tuple[str, float]] = {}

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        node = (metadata or {}).get("langgraph_node")
        if node and kwargs.get("name") == node:
            self._started[run_id] = (str(node), time.perf_counter())

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._stop(run_id, ok=True)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._stop(run_id, ok=False)

    def _stop(self, run_id: UUID, *, ok: bool) -> None:
        started = self._started.pop(run_id, None)
        if started is not None:
            step_finished(started[0], time.perf_counter() - started[1], ok=ok)


# --- event-loop lag -----------------------------------------------------------------------------------
LAG_PERIOD_S = 0.25  # how often the watcher wakes
LAG_WINDOW_S = 5.0  # the gauge shows the worst lateness within this window, so scrapes miss no stall


def watch_event_loop_lag(period_s: float = LAG_PERIOD_S, *, window_s: float = LAG_WINDOW_S,
                         on_lag: Callable[[float], None] | None = None) -> asyncio.Task[None]:
    """Start a task on the running loop that sleeps `period_s` again and again and records how
    late it woke, as `pr_review_event_loop_lag_seconds` (the worst within `window_s`; tagged with
    the deployment inside a Serve replica). Call it once per replica, from a coroutine (its
    start, or the first request); cancel the returned task to stop it. `on_lag` also receives
    each lateness (tests)."""
    return asyncio.get_running_loop().create_task(_watch_lag(period_s, window_s, on_lag), name="event-loop-lag")


async def _watch_lag(period_s: float, window_s: float, on_lag: Callable[[float], None] | None) -> None:
    loop = asyncio.get_running_loop()
    recent: deque[tuple[float, float]] = deque()  # (when, lateness)
    while True:
        started = loop.time()
        await asyncio.sleep(period_s)
        now = loop.time()
        lag = max(now - started - period_s, 0.0)
        recent.append((now, lag))
        while recent and recent[0][0] < now - window_s:
            recent.popleft()
        if on_lag is not None:
            on_lag(lag)
        if (m := _metrics()) is not None:
            _record("loop_lag", m.loop_lag.set, max(late for _, late in recent))
