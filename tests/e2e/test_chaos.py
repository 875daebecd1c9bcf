"""Chaos: a 30-PR batch while agent replicas are SIGKILLed at random every few seconds."""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest

from tests.helpers import add_pr, kill_agent_replicas, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CHAOS = {"PR_REVIEW_MAX_ATTEMPTS": "10"}  # many kills land on the same job; none may fail it


def test_batch_survives_replicas_killed_at_random(stacks) -> None:
    stack = stacks.get(CHAOS)
    stack.llm.reset()
    stack.llm.latency_s = 1.5
    rng = random.Random(7)
    urls = [add_pr(stack.github, files=2) for _ in range(30)]
    batch = stack.api.submit_batch(urls)
    ids = [r["id"] for r in batch["reviews"]]
    stop = threading.Event()
    kills: list[float] = []

    def chaos() -> None:
        while not stop.wait(rng.uniform(4, 8)):
            if kill_agent_replicas():
                kills.append(time.time())

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    try:
        counts = wait_for(lambda: (c := stack.api.batch(batch["id"])["counts"]).get("succeeded", 0) + c.get(
            "failed", 0) == 30 and c, timeout_s=420, interval_s=1, what="the batch to finish under chaos")
    finally:
        stop.set()
        killer.join()
        stack.llm.latency_s = 0.0
    failures = [(j["attempts"], j["error"]) for j in (stack.api.get(i) for i in ids) if j["status"] != "succeeded"]
    assert counts == {"succeeded": 30}, failures
    assert len(kills) >= 2
    with psycopg.connect(stack.database_url) as conn:
        finished = dict(conn.execute("SELECT job_id::text, count(*) FROM events WHERE kind = 'succeeded' "
                                     "GROUP BY job_id").fetchall())
        attempts = [r[0] for r in conn.execute("SELECT attempts FROM jobs WHERE id = ANY(%s::uuid[])", (ids,))]
    assert finished == dict.fromkeys(ids, 1)  # no job ran twice to completion
    assert max(attempts) > 1  # the chaos really hit running reviews
