"""Crashes, done for real: agent replicas SIGKILLed mid-review, jobs resumed from checkpoints."""

from __future__ import annotations

import pytest

from tests.helpers import add_pr, kill_agent_replicas, schema_name, wait_for, wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_replica_killed_mid_review_resumes_without_repeating_finished_llm_calls(stack) -> None:
    stack.llm.latency_s = 2.0
    try:
        job = stack.api.submit(add_pr(stack.github, files=3))
        # Kill while the summary call is in flight: the group review before it is checkpointed.
        wait_for(lambda: any(schema_name(c) == "review_summary" and c.outcome is None for c in stack.llm.requests),
                 timeout_s=60, what="the summary call")
        assert kill_agent_replicas(), "no agent replica to kill"
        done = wait_terminal(stack.api, job["id"], timeout_s=120)
    finally:
        stack.llm.latency_s = 0.0
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    calls = [schema_name(c) for c in stack.llm.requests]
    assert calls.count("group_review") == 1  # finished before the crash: not paid for again
    assert calls.count("review_summary") == 2  # the one cut off by the crash, then its redo
    assert [c.outcome for c in stack.llm.requests if schema_name(c) == "review_summary"] == ["aborted", "completed"]
    assert done["usage"]["llm_calls"] == 3


def test_rolling_update_drains_a_review_at_a_step_boundary_without_spending_an_attempt(stack) -> None:
    stack.llm.latency_s = 2.5
    try:
        job = stack.api.submit(add_pr(stack.github, files=2))
        wait_for(lambda: any(schema_name(c) == "group_review" and c.outcome is None for c in stack.llm.requests),
                 timeout_s=60, what="the group review call")
        # A new version of the agent deployment, deployed as an operator would (serve deploy of a
        # changed config): Serve replaces the replica that runs the review.
        stack.local.deploy({"ReviewAgent": {"ray_actor_options": {
            "runtime_env": {"env_vars": {"PR_REVIEW_ROLLOUT": job_marker()}}}}})
        done = wait_terminal(stack.api, job["id"], timeout_s=180)
        events = [e["kind"] for e in stack.api.events(job["id"])]
    finally:
        stack.llm.latency_s = 0.0
    assert done["status"] == "succeeded", done["error"]
    assert "requeued" in events
    assert done["attempts"] == 1  # handing the job back is not a failed attempt
    calls = [(schema_name(c), c.outcome) for c in stack.llm.requests]
    assert calls == [("group_review", "completed"), ("review_summary", "completed")]


def job_marker() -> str:
    import uuid

    return uuid.uuid4().hex
