"""Is the model kept busy? The global LLM cap's utilization under a backlog, and one review's wall
time against the critical path of its LLM calls.

The agents call an external endpoint (the scripted LLM at a fixed latency), so the global cap
(`PR_REVIEW_LLM_GLOBAL_CONCURRENCY` slots in PostgreSQL) applies.

1. One review alone, of a PR planned into `--groups` groups: its LLM calls run in stages (the
   groups in parallel, then the summary), so its critical path is the sum over the stages of the
   longest call in each. Printed: wall time (the job's start to its finish, from the database) over
   that critical path (goal <= 1.15), where the rest went (before the first call, between the
   stages, after the last), and database transactions per LLM call.
2. A backlog of `--reviews` such reviews submitted at once: calls in flight at the model, sampled
   every 50 ms, over the cap, while work waits (jobs still queued). Goal >= 90 %.

    python -m bench.llm_utilization [--latency-s 1] [--cap 8] [--groups 6] [--reviews 30]
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench._harness import BenchStack, bench_stack
from tests.fakes import FakeFile, FakeGitHub, LLMCall, ScriptedLLM

SAMPLE_S = 0.05
# One file per group: about 4,500 estimated tokens of diff each, against a group budget of about
# 5,900 (8,192-token context, 1,024 for the answer, the prompt's header).
DEFS_PER_FILE = 150
SUMMARY_MARK = "Write the overall review"


def add_grouped_pr(github: FakeGitHub, number: int, groups: int) -> str:
    """A PR that the planner cuts into `groups` groups, one file each."""
    files = []
    for i in range(groups):
        head = "".join(f"def handler_{number}_{i}_{j}(request):\n    return eval(request.args['q{j}'])\n"
                       for j in range(DEFS_PER_FILE))
        files.append(FakeFile(f"src/mod_{number}_{i}.py", base="x = 1\n", head=head))
    github.add_pr("bench", "repo", number, files)
    return github.pr_url("bench", "repo", number)


@dataclass
class Sample:
    t_s: float
    in_flight: int
    queued: int
    running: int


class Sampler:
    """Calls in flight at the scripted LLM every SAMPLE_S; queued and running jobs every 10th tick."""

    def __init__(self, llm: ScriptedLLM, database_url: str) -> None:
        self.llm, self.database_url = llm, database_url
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> Sampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        queued = running = 0
        with psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row) as conn:
            tick = 0
            while not self._stop.is_set():
                if tick % 10 == 0:
                    row = conn.execute("SELECT count(*) FILTER (WHERE status = 'queued') AS queued, "
                                       "count(*) FILTER (WHERE status = 'running') AS running FROM jobs").fetchone()
                    assert row is not None
                    queued, running = int(row["queued"]), int(row["running"])
                self.samples.append(Sample(time.monotonic() - self.started, self.llm.in_flight, queued, running))
                tick += 1
                self._stop.wait(SAMPLE_S)


def _transactions(database_url: str) -> int:
    """Transactions committed in this database so far (every autocommitted statement is one)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def _job_times(database_url: str, job_id: str) -> tuple[datetime, datetime, datetime]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT created_at, started_at, finished_at FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None and row[1] is not None and row[2] is not None, row
    return row[0], row[1], row[2]


def _wait_done(stack: BenchStack, ids: list[str], timeout_s: float) -> dict[str, Any]:
    """The reviews once none is queued or running (watched in the database: one query a poll,
    where asking the API for each review would add load of its own)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[]) "
                               "AND status IN ('queued', 'running')", (ids,)).fetchone()
            if row is not None and row[0] == 0:
                with stack.http() as http:
                    return {i: http.get(f"/v1/reviews/{i}").json() for i in ids}
            time.sleep(0.2)
    raise TimeoutError(f"reviews still running after {timeout_s:.0f} s")


def _submit(stack: BenchStack, urls: list[str]) -> list[str]:
    with stack.http() as http:
        return [str(http.post("/v1/reviews", json={"pr_url": url}).raise_for_status().json()["id"]) for url in urls]


def single_review(stack: BenchStack, groups: int, number: int) -> dict[str, float]:
    database_url, llm = stack.database_url, stack.llm
    url = add_grouped_pr(stack.github, number, groups)
    llm.reset()
    before = _transactions(database_url)
    [job_id] = _submit(stack, [url])
    job = _wait_done(stack, [job_id], timeout_s=300)[job_id]
    transactions = _transactions(database_url) - before
    if job["status"] != "succeeded":
        raise RuntimeError(f"the review ended {job['status']}: {job['error']}")
    created, started, finished = _job_times(database_url, job_id)
    calls: list[LLMCall] = [c for c in llm.requests if f"#{number}" in c.text]
    summary = [c for c in calls if SUMMARY_MARK in c.text]
    group_calls = [c for c in calls if SUMMARY_MARK not in c.text]
    if len(summary) != 1 or len(group_calls) != groups or any(c.finished_at is None for c in calls):
        raise RuntimeError(f"expected {groups} group calls and one summary, got {len(group_calls)} and {len(summary)}")

    def end(call: LLMCall) -> float:
        assert call.finished_at is not None
        return call.finished_at

    group_stage = max(end(c) - c.started_at for c in group_calls)
    summary_stage = end(summary[0]) - summary[0].started_at
    critical = group_stage + summary_stage
    wall = (finished - started).total_seconds()
    return {
        "groups": groups, "llm_calls": len(calls), "wall_s": wall, "critical_s": critical, "ratio": wall / critical,
        "submit_to_done_s": (finished - created).total_seconds(),
        "queue_s": (started - created).total_seconds(),
        "before_first_call_s": min(c.started_at for c in group_calls) - started.timestamp(),
        "group_spread_s": max(c.started_at for c in group_calls) - min(c.started_at for c in group_calls),
        "between_stages_s": summary[0].started_at - max(end(c) for c in group_calls),
        "after_last_call_s": finished.timestamp() - end(summary[0]),
        "transactions": transactions, "transactions_per_call": transactions / len(calls),
    }


@dataclass
class Backlog:
    samples: list[Sample]
    utilization: float  # while jobs were queued
    overall: float  # from the first call until the last review ended
    transactions_per_call: float


def backlog(stack: BenchStack, *, reviews: int, groups: int, cap: int, first_number: int) -> Backlog:
    urls = [add_grouped_pr(stack.github, first_number + i, groups) for i in range(reviews)]
    stack.llm.reset()
    before = _transactions(stack.database_url)
    with Sampler(stack.llm, stack.database_url) as sampler:
        ids = _submit(stack, urls)
        _wait_done(stack, ids, timeout_s=600)
    transactions = _transactions(stack.database_url) - before
    samples = sampler.samples
    first_call = next((s.t_s for s in samples if s.in_flight), 0.0)
    # While work waits: from the first call until no job is queued any more.
    last_queued = max((s.t_s for s in samples if s.queued), default=first_call)
    window = [s for s in samples if first_call <= s.t_s <= last_queued]
    utilization = sum(min(s.in_flight, cap) for s in window) / (cap * len(window)) if window else 0.0
    everything = [s for s in samples if s.t_s >= first_call and (s.queued or s.running)]
    overall = sum(min(s.in_flight, cap) for s in everything) / (cap * len(everything)) if everything else 0.0
    return Backlog(samples, utilization, overall, transactions / max(stack.llm.started, 1))


def print_timeline(samples: list[Sample], cap: int, every_s: float = 2.0) -> None:
    print(f"{'t (s)':>6}{'in flight (mean)':>18}{'of cap':>8}{'queued':>8}{'running':>9}")
    start = 0.0
    while start <= (samples[-1].t_s if samples else 0):
        bucket = [s for s in samples if start <= s.t_s < start + every_s]
        if bucket:
            mean = sum(s.in_flight for s in bucket) / len(bucket)
            print(f"{start:>6.0f}{mean:>18.1f}{mean / cap:>8.0%}{bucket[-1].queued:>8}{bucket[-1].running:>9}")
        start += every_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-s", type=float, default=1.0, help="the scripted LLM's answer time")
    parser.add_argument("--cap", type=int, default=8, help="PR_REVIEW_LLM_GLOBAL_CONCURRENCY")
    parser.add_argument("--groups", type=int, default=6, help="LLM groups per review (plus one summary)")
    parser.add_argument("--reviews", type=int, default=30, help="the backlog")
    parser.add_argument("--single-runs", type=int, default=3, help="single reviews measured (median printed)")
    args = parser.parse_args()

    env = {"PR_REVIEW_LLM_GLOBAL_CONCURRENCY": str(args.cap), "PR_REVIEW_LLM_CONTEXT_TOKENS": "8192"}
    with bench_stack(llm_latency_s=args.latency_s, env=env) as stack:
        _wait_done(stack, _submit(stack, [add_grouped_pr(stack.github, 1, 1)]), 120)  # warm
        singles = [single_review(stack, args.groups, 10 + i) for i in range(args.single_runs)]
        result = backlog(stack, reviews=args.reviews, groups=args.groups, cap=args.cap, first_number=1000)

    print(f"\n1. One review alone: {args.groups} groups + a summary on a {args.latency_s:g} s LLM, cap {args.cap} "
          f"({len(singles)} runs; each run's figures)")
    keys = ["wall_s", "critical_s", "ratio", "queue_s", "before_first_call_s", "group_spread_s", "between_stages_s",
            "after_last_call_s", "transactions", "transactions_per_call"]
    for key in keys:
        print(f"   {key:<24}" + "".join(f"{s[key]:>9.3f}" for s in singles))
    ratios = sorted(s["ratio"] for s in singles)
    median = ratios[len(ratios) // 2]
    print(f"   wall / critical path, median {median:.3f}: goal <= 1.15 {'met' if median <= 1.15 else 'NOT met'}")

    print(f"\n2. A backlog of {args.reviews} reviews ({args.groups} groups each), cap {args.cap}, "
          f"{args.latency_s:g} s LLM")
    print_timeline(result.samples, args.cap)
    print(f"   utilization while work waits (jobs queued): {result.utilization:.1%} of the cap; "
          f"until the last review ended: {result.overall:.1%}")
    print(f"   database transactions per LLM call (everything the service wrote and read meanwhile): "
          f"{result.transactions_per_call:.1f}")
    print(f"   goal >= 90 % while work waits: {'met' if result.utilization >= 0.9 else 'NOT met'}")


if __name__ == "__main__":
    main()
