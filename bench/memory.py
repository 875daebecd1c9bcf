"""Peak resident memory of the agent replicas with 500 jobs waiting versus 5 waiting.

Only running jobs live in a replica's memory; queued ones wait in Postgres. Both phases run in
one session against the same stack, so the ratio cancels the machine's noise.

    python bench/memory.py [--many 500] [--few 5]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import httpx
import psutil

from bench._harness import add_prs, bench_stack
from bench.recovery import agent_pids


def peak_rss_mb(api_url: str, urls: list[str], sample_s: float,
                headers: dict[str, str]) -> tuple[float, int, int]:
    """Submit `urls`, then sample the agents' RSS while they work; (peak MB, max queued, replicas)."""
    with httpx.Client(base_url=api_url, timeout=60, headers=headers) as http:
        http.post("/v1/batches", json={"pr_urls": urls}).raise_for_status()
        peak, max_queued, replicas = 0.0, 0, 0
        deadline = time.monotonic() + sample_s
        while time.monotonic() < deadline:
            pids = agent_pids()
            replicas = max(replicas, len(pids))
            for pid in pids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    peak = max(peak, psutil.Process(pid).memory_info().rss / 2**20)
            max_queued = max(max_queued, http.get("/readyz").json()["queued"])
            time.sleep(0.5)
        return peak, max_queued, replicas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--many", type=int, default=500)
    parser.add_argument("--few", type=int, default=5)
    parser.add_argument("--sample-s", type=float, default=40.0)
    args = parser.parse_args()
    with bench_stack(llm_latency_s=2.0) as stack:
        few, few_queued, few_replicas = peak_rss_mb(stack.api_url, add_prs(stack.github, args.few, start=1),
                                                    args.sample_s, stack.headers)
        many, many_queued, many_replicas = peak_rss_mb(
            stack.api_url, add_prs(stack.github, args.many, start=10_000), args.sample_s, stack.headers)
    print(f"{'jobs submitted':<16}{'max queued':>12}{'replicas':>10}{'peak RSS per replica':>24}")
    print(f"{args.few:<16}{few_queued:>12}{few_replicas:>10}{few:>21.0f} MB")
    print(f"{args.many:<16}{many_queued:>12}{many_replicas:>10}{many:>21.0f} MB")
    print(f"memory ratio {args.many} vs {args.few} waiting: {many / few:.2f} (goal < 1.2)")


if __name__ == "__main__":
    main()
