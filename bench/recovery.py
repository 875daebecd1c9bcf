"""Recovery after agent replicas die: time until their jobs run again, and the LLM calls wasted.

The same batch (same PR contents) runs twice in one session: once undisturbed (the baseline),
once while agent replicas are SIGKILLed every few seconds. Waste ratio = LLM calls with chaos /
LLM calls without. Resume time = from a kill to each interrupted job's next `started` event.

    python bench/recovery.py [--prs 60] [--kill-every 15]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time
from datetime import datetime

import httpx
import psycopg

from bench._harness import add_prs, bench_stack, percentile
from serve_app.local import replica_pids


def agent_pids() -> list[int]:
    return replica_pids("ReviewAgent")


def run_batch(api_url: str, urls: list[str], database_url: str, kill_every_s: float | None,
              headers: dict[str, str]) -> tuple[list[datetime], dict[str, int]]:
    """Runs the batch to its end (killing the agents every `kill_every_s`); the kills' times and
    the batch's final counts by status."""
    kills: list[datetime] = []
    with httpx.Client(base_url=api_url, timeout=30, headers=headers) as http:
        batch = http.post("/v1/batches", json={"pr_urls": urls}).json()
        next_kill = time.monotonic() + (kill_every_s or 0)
        while True:
            counts = http.get(f"/v1/batches/{batch['id']}").json()["counts"]
            if counts.get("succeeded", 0) + counts.get("failed", 0) == len(urls):
                return kills, counts
            if kill_every_s and time.monotonic() >= next_kill:
                with psycopg.connect(database_url) as conn:
                    row = conn.execute("SELECT now()").fetchone()
                    assert row is not None
                    killed_at = row[0]
                pids = agent_pids()
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                kills.append(killed_at)
                next_kill = time.monotonic() + kill_every_s
            time.sleep(0.2)


def resume_times(database_url: str, kills: list) -> list[float]:
    """Seconds from each kill to the restart of each job it interrupted."""
    with psycopg.connect(database_url) as conn:
        requeued = conn.execute("SELECT job_id, created_at FROM events WHERE kind = 'requeued' ORDER BY id").fetchall()
        started = conn.execute("SELECT job_id, created_at FROM events WHERE kind = 'started' ORDER BY id").fetchall()
    times = []
    for job_id, requeued_at in requeued:
        kill = max((k for k in kills if k <= requeued_at), default=None)
        restart = next((at for jid, at in started if jid == job_id and at > requeued_at), None)
        if kill is not None and restart is not None:
            times.append((restart - kill).total_seconds())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prs", type=int, default=60)
    parser.add_argument("--kill-every", type=float, default=15.0)
    args = parser.parse_args()
    with bench_stack(llm_latency_s=2.0, env={"PR_REVIEW_MAX_ATTEMPTS": "20"}) as stack:
        baseline_urls = add_prs(stack.github, args.prs, start=1, files=3)
        run_batch(stack.api_url, baseline_urls, stack.database_url, None, stack.headers)
        baseline_calls = len(stack.llm.requests)
        stack.llm.reset()
        chaos_urls = add_prs(stack.github, args.prs, start=10_000, files=3)
        started = time.monotonic()
        kills, counts = run_batch(stack.api_url, chaos_urls, stack.database_url, args.kill_every, stack.headers)
        chaos_s = time.monotonic() - started
        chaos_calls = len(stack.llm.requests)
        times = resume_times(stack.database_url, kills)
    print(f"{args.prs} PRs (3 files each), LLM latency 2 s, replicas SIGKILLed every {args.kill_every:.0f} s")
    print(f"kills: {len(kills)} over {chaos_s:.0f} s; interrupted jobs resumed: {len(times)}; "
          f"the batch ended {counts}")
    if times:
        print(f"resume time after a kill: median {statistics.median(times):.1f} s, p90 {percentile(times, 90):.1f} s, "
              f"max {max(times):.1f} s (goal < 15 s)")
    print(f"LLM calls: {baseline_calls} without chaos, {chaos_calls} with chaos -> waste ratio "
          f"{chaos_calls / baseline_calls:.2f} (goal < 1.2)")


if __name__ == "__main__":
    main()
