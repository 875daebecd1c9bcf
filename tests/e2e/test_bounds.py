"""Every LLM call bounded, counted and cancellable: cancel, deadline, budget, full queue."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers import add_pr, schema_name, wait_for, wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# One review at a time (one agent replica taking one review; serve_config.yaml's options, overridden as an
# operator would), a short deadline and a one-call budget, so each bound is reached on purpose.
BOUNDED = {"PR_REVIEW_JOB_DEADLINE_S": "4", "PR_REVIEW_LLM_TIMEOUT_S": "60", "PR_REVIEW_JOB_MAX_LLM_CALLS": "1",
           "PR_REVIEW_MAX_QUEUED_JOBS": "2"}
ONE_AT_A_TIME = {"ReviewAgent": {"max_ongoing_requests": 1, "max_queued_requests": 1,
                                 "autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}}


def in_flight(stack) -> list:
    return [c for c in stack.llm.requests if c.outcome is None]


def test_cancel_mid_llm_call_aborts_the_request_and_starts_no_other(stack) -> None:
    stack.llm.latency_s = 30.0
    try:
        job = stack.api.submit(add_pr(stack.github, files=2))
        wait_for(lambda: in_flight(stack), timeout_s=60, what="an LLM call in flight")
        response = stack.http.delete(f"{stack.api_url}/v1/reviews/{job['id']}")
        assert response.status_code == 202
        cancelled_at = time.time()
        done = wait_terminal(stack.api, job["id"], timeout_s=10)
        assert done["status"] == "cancelled"
        assert done["error"]["code"] == "cancelled"
        assert stack.llm.wait_until(lambda llm: llm.in_flight == 0, timeout_s=5)
        time.sleep(2)  # anything that would still start, starts now
    finally:
        stack.llm.latency_s = 0.0
    assert [c.outcome for c in stack.llm.requests] == ["aborted"]
    assert all(c.started_at < cancelled_at for c in stack.llm.requests)
    again = stack.http.delete(f"{stack.api_url}/v1/reviews/{job['id']}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_finished"


def test_a_client_that_disconnects_cancels_and_duplicates_nothing(stack) -> None:
    stack.llm.latency_s = 1.0
    try:
        pr_url = add_pr(stack.github)
        job = stack.api.submit(pr_url)
        with stack.http.stream("GET", f"{stack.api_url}/v1/reviews/{job['id']}/events") as response:
            next(response.iter_lines())  # read a little, then hang up mid-stream
        with pytest.raises(httpx.ReadTimeout):  # a client that gives up before the answer
            stack.http.post(f"{stack.api_url}/v1/reviews", json={"pr_url": pr_url},
                       timeout=httpx.Timeout(5, read=0.000001))
        done = wait_terminal(stack.api, job["id"])
    finally:
        stack.llm.latency_s = 0.0
    assert done["status"] == "succeeded" and done["attempts"] == 1
    same_pr = [j for j in stack.api.list(limit=500) if j["pr_url"] == done["pr_url"]]
    assert [j["id"] for j in same_pr] == [job["id"]]
    assert [schema_name(c) for c in stack.llm.requests] == ["group_review", "review_summary"]


def test_a_job_that_keeps_killing_its_workers_stops_after_max_attempts(stack) -> None:
    """Every execution dies in the same LLM call. The first got further than the one before it
    (fetch and plan are checkpointed), so it does not count; three more in a row without a step
    finished stop the review (PR_REVIEW_MAX_ATTEMPTS=3)."""
    from tests.helpers import kill_agent_replicas

    stack.llm.latency_s = 30.0
    try:
        job = stack.api.submit(add_pr(stack.github))
        for attempt in (1, 2, 3, 4):
            wait_for(lambda n=attempt: stack.api.get(job["id"])["attempts"] == n and len(in_flight(stack)) == 1,
                     timeout_s=90, what=f"attempt {attempt} calling the LLM")
            kill_agent_replicas()
            wait_for(lambda: not in_flight(stack), timeout_s=30, what="the killed call to drop")
        done = wait_terminal(stack.api, job["id"], timeout_s=60)
    finally:
        stack.llm.latency_s = 0.0
    assert done["status"] == "failed"
    assert done["error"] == {"code": "max_attempts_exceeded", "message": "The review was stopped after 4 attempts: "
                             "its worker died 3 times in a row without finishing a step."}
    time.sleep(2)
    assert len(stack.llm.requests) == 4  # no fifth try


def test_deadline_cancels_a_running_review(stacks) -> None:
    stack = stacks.get(BOUNDED, deployments=ONE_AT_A_TIME)
    stack.llm.reset()
    stack.llm.latency_s = 30.0
    try:
        job = stack.api.submit(add_pr(stack.github))
        done = wait_terminal(stack.api, job["id"], timeout_s=30)
        assert stack.llm.wait_until(lambda llm: llm.in_flight == 0, timeout_s=5)
    finally:
        stack.llm.latency_s = 0.0
    assert done["status"] == "failed"
    assert done["error"]["code"] == "deadline_exceeded"
    assert [c.outcome for c in stack.llm.requests] == ["aborted"]


def test_llm_call_budget_fails_the_review_with_its_code(stacks) -> None:
    stack = stacks.get(BOUNDED, deployments=ONE_AT_A_TIME)
    stack.llm.reset()
    done = wait_terminal(stack.api, stack.api.submit(add_pr(stack.github))["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "budget_exceeded"
    assert done["usage"]["llm_calls"] == 1 == len(stack.llm.requests)


def test_full_queue_answers_503_with_retry_after_and_loses_nothing(stacks) -> None:
    stack = stacks.get(BOUNDED, deployments=ONE_AT_A_TIME)
    stack.llm.reset()
    stack.llm.latency_s = 30.0
    try:
        accepted = [stack.api.submit(add_pr(stack.github))]
        wait_for(lambda: stack.api.get(accepted[0]["id"])["status"] == "running", timeout_s=30,
                 what="the first review to run")
        accepted += [stack.api.submit(add_pr(stack.github)) for _ in range(2)]  # 1 running + 2 queued
        refused = stack.http.post(f"{stack.api_url}/v1/reviews", json={"pr_url": add_pr(stack.github)})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) > 0
        assert [j["status"] for j in (stack.api.get(a["id"]) for a in accepted)].count("queued") == 2
    finally:
        stack.llm.latency_s = 0.0
    for job in accepted:
        assert wait_terminal(stack.api, job["id"], timeout_s=60)["status"] in {"succeeded", "failed"}
    assert len(stack.api.list(limit=500)) == len({j["id"] for j in stack.api.list(limit=500)})
