"""The agent pool scales on work: a spike of reviews takes it from its minimum to its maximum
replicas and, once the queue drains, back to the minimum, while the agents' CPU stays low."""

from __future__ import annotations

import pytest

from bench._timeline import AGENT, TimelineRecorder, agent_replicas
from prreview.models import TERMINAL_STATUSES
from serve_app.serve_config import REVIEWS_APP, deployment_options, load_config
from tests.helpers import add_pr, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

SPIKE = 60
LLM_LATENCY_S = 2.0


def test_a_spike_of_reviews_scales_the_agents_to_max_and_back_to_min(stack) -> None:
    agent = deployment_options(load_config(), REVIEWS_APP, AGENT)
    low, high = agent["autoscaling_config"]["min_replicas"], agent["autoscaling_config"]["max_replicas"]
    assert low < high
    # An earlier test's load may still be scaling down: start from an idle pool at its minimum.
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
            at_max = timeline.latest

            def finished() -> dict[str, int] | None:
                counts = stack.api.batch(batch["id"])["counts"]
                return counts if sum(counts.get(s, 0) for s in TERMINAL_STATUSES) == SPIKE else None

            counts = wait_for(finished, timeout_s=150, interval_s=1, what=f"all {SPIKE} reviews to finish")
            wait_for(lambda: agent_replicas() == (low, low), timeout_s=90, interval_s=1,
                     what=f"the pool back at {low} replica(s) after the queue drained")
    finally:
        stack.llm.latency_s = 0.0

    assert counts.get("succeeded") == SPIKE, counts
    samples = timeline.snapshot()
    assert max(s.replicas_target for s in samples) == high  # never above the configured maximum
    # The pool reached its maximum while reviews were still waiting: the backlog drove it.
    assert at_max is not None and at_max.pending > 0, at_max
    # More reviews ran at once than one replica admits: the added replicas did real work.
    assert stack.llm.peak_in_flight > agent["max_ongoing_requests"]
    # Busy agents use less CPU than they reserve, so a CPU-utilisation autoscaler would never have
    # scaled this pool. Samples with a replica starting up (imports) are left out.
    steady = [s for s in samples if (s.pending or s.running) and s.replicas == s.replicas_target]
    per_replica = sum(s.agent_cpu_pct / s.replicas for s in steady) / len(steady)
    assert per_replica < 100 * agent["ray_actor_options"]["num_cpus"], per_replica
