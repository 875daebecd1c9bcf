"""Autoscaling on work: a spike of reviews against a slow LLM, recorded second by second.

Starts a real local pr-review (Ray, Serve, PostgreSQL) against the fake GitHub and the scripted
LLM with a fixed latency, submits a batch of distinct PRs at once, and records pending and
running jobs, agent replicas and CPU use until the pool is back at its minimum. Writes the
timeline as CSV and a PNG plot, and prints a table.

    python -m bench.autoscale                       # 60 reviews, 2 s LLM latency
    python -m bench.autoscale --reviews 100 --latency-s 3

Runs in a fresh database on DATABASE_URL's server (bench/_harness.py).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from bench._harness import add_prs, bench_stack
from bench._timeline import AGENT, TimelineRecorder, agent_replicas, markdown_table, plot, write_csv
from serve_app.client import Client
from serve_app.serve_config import REVIEWS_APP, deployment_options, load_config

ROOT = Path(__file__).resolve().parents[1]


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds it took for `predicate` to hold; raises after `timeout_s`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - start


def run(reviews: int, latency_s: float, csv_path: Path, png_path: Path, settle_s: float,
        scale_down_timeout_s: float) -> str:
    agent = deployment_options(load_config(), REVIEWS_APP, AGENT)
    autoscaling = agent["autoscaling_config"]
    num_cpus = agent.get("ray_actor_options", {}).get("num_cpus")
    low, high = int(autoscaling["min_replicas"]), int(autoscaling["max_replicas"])
    print("starting Ray, Serve and the review app...", flush=True)
    with bench_stack(llm_latency_s=latency_s) as stack:
        _wait(lambda: agent_replicas() == (low, low), 120, "the agent pool at its minimum")
        urls = add_prs(stack.github, reviews, files=1)
        with Client(stack.api_url, api_key=stack.api_key) as api, TimelineRecorder(stack.database_url) as recorder:
            time.sleep(settle_s)  # a few idle samples before the spike
            spike_t = recorder.elapsed_s()
            api.submit_batch(urls)
            print(f"submitted {reviews} reviews (LLM latency {latency_s:g} s)", flush=True)
            up = _wait(lambda: agent_replicas()[0] == high, 180, f"{high} agent replicas")
            drained = up + _wait(lambda: _drained(recorder, reviews), 600, "the queue to drain")
            down = drained + _wait(lambda: agent_replicas() == (low, low), scale_down_timeout_s,
                                   f"the pool back at {low} replica(s)")
            time.sleep(settle_s)
        samples = recorder.snapshot()
        peak_llm_calls = stack.llm.peak_in_flight
    write_csv(samples, csv_path)
    plot(samples, png_path, max_replicas=high, spike_t=spike_t,
         agent_num_cpus=num_cpus,
         title=f"{reviews} reviews at once, LLM latency {latency_s:g} s: ReviewAgent {low} → {high} → {low}")
    busy = [s for s in samples if s.running or s.pending]
    # Per busy replica, leaving out samples where a replica was starting (its imports burn CPU).
    steady = [s.agent_cpu_pct / s.replicas for s in busy if s.replicas and s.replicas == s.replicas_target]
    summary = (
        f"spike at t={spike_t:.0f} s; after it: {high} replicas running at +{up:.0f} s, queue drained at "
        f"+{drained:.0f} s, back to {low} replica(s) at +{down:.0f} s.\n"
        f"peak LLM calls in flight: {peak_llm_calls}. While reviews were pending or running, in % of "
        f"one core: all agents max {max(s.agent_cpu_pct for s in busy):.0f}% (mean "
        f"{sum(s.agent_cpu_pct for s in busy) / len(busy):.0f}%), per replica with none starting mean "
        f"{sum(steady) / len(steady):.0f}% (each reserves {num_cpus}), whole Ray cluster mean "
        f"{sum(s.cluster_cpu_pct for s in busy) / len(busy):.0f}%; machine ({psutil.cpu_count()} cores, "
        f"shared) mean {sum(s.machine_cpu_pct for s in busy) / len(busy):.0f}% of all cores."
    )
    if recorder.errors:
        summary += f"\n{len(recorder.errors)} failed samples, first: {recorder.errors[0]}"
    return f"{markdown_table(samples)}\n\n{summary}"


def _drained(recorder: TimelineRecorder, reviews: int) -> bool:
    last = recorder.latest
    return last is not None and last.done >= reviews and not (last.pending or last.running)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.autoscale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, default=60, help="reviews submitted at once")
    parser.add_argument("--latency-s", type=float, default=2.0, help="the scripted LLM's latency per call")
    parser.add_argument("--csv", type=Path, default=ROOT / "bench" / "out" / "autoscale.csv")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "autoscale.png")
    parser.add_argument("--settle-s", type=float, default=5.0, help="idle seconds recorded before and after")
    parser.add_argument("--scale-down-timeout-s", type=float, default=180.0)
    args = parser.parse_args(argv)
    report = run(args.reviews, args.latency_s, args.csv, args.png, args.settle_s, args.scale_down_timeout_s)
    print(report)
    print(f"\nwrote {args.csv} and {args.png}")


if __name__ == "__main__":
    main()
