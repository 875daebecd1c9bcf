"""The dispatcher stops at Serve's bound for the agent pool (serve_config.yaml's options, as Serve
applies them): it never marks more jobs dispatched than the pool accepts."""

from __future__ import annotations

import psycopg
import pytest

from tests.helpers import add_pr, wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# One replica that runs one review and queues one more: Serve accepts 1 x 1 + 1 = 2 calls.
ONE_AT_A_TIME = {"ReviewAgent": {"max_ongoing_requests": 1, "max_queued_requests": 1,
                                 "autoscaling_config": {"min_replicas": 1, "max_replicas": 1,
                                                        "target_ongoing_requests": 1}}}
BOUND = 2

# Every statement that changes jobs.dispatched_at records how many jobs are dispatched right after
# it: the exact peak, which a poll from outside could miss between a claim and a release.
PEAK_RECORDER = """
CREATE TABLE test_dispatched (n integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION test_record_dispatched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_dispatched (n) SELECT count(*) FROM jobs WHERE dispatched_at IS NOT NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER test_dispatched_count AFTER UPDATE OF dispatched_at ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION test_record_dispatched();
"""


def test_dispatcher_hands_the_pool_no_more_than_serve_accepts(stacks) -> None:
    stack = stacks.get(deployments=ONE_AT_A_TIME)
    stack.llm.reset()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(PEAK_RECORDER)
    stack.llm.latency_s = 1.5
    try:
        # One batch: the dispatcher is woken once with all four queued, the case that over-claims.
        batch = stack.api.submit_batch([add_pr(stack.github) for _ in range(4)])
        done = [wait_terminal(stack.api, r["id"], timeout_s=120) for r in batch["reviews"]]
    finally:
        stack.llm.latency_s = 0.0
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            peaks = [r[0] for r in conn.execute("SELECT n FROM test_dispatched ORDER BY at")]
            conn.execute("DROP TRIGGER test_dispatched_count ON jobs; DROP FUNCTION test_record_dispatched();"
                         " DROP TABLE test_dispatched")
    assert [j["status"] for j in done] == ["succeeded"] * 4, [j["error"] for j in done]
    assert max(peaks) == BOUND, peaks  # the queue place is used (it drives autoscaling), never more
    assert stack.llm.peak_in_flight == 1  # one review at a time on the one replica
    assert all(j["attempts"] == 1 for j in done)
