"""The agent pool scales on work: a spike of reviews takes it from its minimum to its maximum
replicas and, once the queue drains, back to the minimum, while the agents' CPU stays low."""

from __future__ import annotations

import pytest

from bench._timeline import AGENT, TimelineRecorder, agent_replicas
from serve_app.serve_config import load_apps
from tests.helpers import add_pr, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

SPIKE = 60
LLM_LATENCY_S = 2.0


def test_a_spike_of_reviews_scales_the_agents_to_max_and_back_to_min(stack) -> None:
    autoscaling = load_apps()["reviews"].deployments[AGENT]["autoscaling_config"]
    low, high = autoscaling["min_replicas"], autoscaling["max_replicas"]
    assert low < high
    # A previous test's load may still be scaling down: start from an idle pool at its minimum.
    wait_for(lambda: agent_replicas() == (low, low), timeout_s=120, interval_s=1,
             what=f"the agent pool at {low} replica(s) before the spike")
    urls = [add_pr(stack.github) for _ in range(SPIKE)]
    stack.llm.latency_s = LLM_LATENCY_S
    try:
        with TimelineRecorder(stack.database_url) as timeline:
            batch = stack.api.submit_batch(urls)
            assert all("id" in item for item in batch["reviews"]), batch
            wait_for(lambda: agent_replicas()[0] == high, timeout_s=120, interval_s=0.5,
                     what=f"{high} agent replicas running")
            backlog_at_max = timeline.latest
            wait_for(lambda: stack.api.batch(batch["id"])["counts"].get("succeeded", 0) == SPIKE,
                     timeout_s=150, interval_s=1, what=f"all {SPIKE} reviews to succeed")
            wait_for(lambda: agent_replicas() == (low, low), timeout_s=90, interval_s=1,
                     what=f"the pool back at {low} replica(s) after the queue drained")
    finally:
        stack.llm.latency_s = 0.0

    samples = timeline.snapshot()
    assert max(s.replicas_target for s in samples) == high  # never above the configured maximum
    # The pool reached its maximum while work was still waiting: it scaled because of the queue.
    assert backlog_at_max is not None and backlog_at_max.pending + backlog_at_max.running > 0
    # More reviews ran at once than one replica admits: the added replicas did real work.
    per_replica = load_apps()["reviews"].deployments[AGENT]["max_ongoing_requests"]
    assert stack.llm.peak_in_flight > per_replica
