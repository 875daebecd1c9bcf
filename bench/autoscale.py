"""Autoscaling on work: a spike of reviews against a slow LLM, recorded second by second.

Starts a real local pr-review (Ray, Serve, PostgreSQL) against the fake GitHub and the scripted
LLM with a fixed latency, submits a batch of distinct PRs at once, and records pending and
running jobs, agent replicas and CPU use until the pool is back at its minimum. Writes the
timeline as CSV and a PNG plot, and prints a table.

    python -m bench.autoscale                       # 60 reviews, 2 s LLM latency
    python -m bench.autoscale --reviews 100 --latency-s 3

Uses DATABASE_URL's server when set (in a fresh database, dropped afterwards), otherwise the
embedded PostgreSQL in a temporary PR_REVIEW_HOME.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg

from bench._timeline import AGENT, TimelineRecorder, agent_replicas, markdown_table, plot, write_csv
from prreview.config import load_settings
from prreview.fakes.github import FakeFile, FakeGitHub
from prreview.fakes.llm import ScriptedLLM
from serve_app.client import Client
from serve_app.local import LocalStack
from serve_app.serve_config import load_apps

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds it took for `predicate` to hold; raises after `timeout_s`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - start


@contextmanager
def fresh_database(server_url: str | None) -> Iterator[str | None]:
    """A new empty database on `server_url` (dropped on exit); None means the embedded server."""
    if not server_url:
        yield None
        return
    name = f"bench_autoscale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo(**info)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def add_prs(github: FakeGitHub, count: int) -> list[str]:
    """`count` distinct one-file PRs (each a distinct review; none is deduplicated)."""
    urls = []
    for number in range(1, count + 1):
        base = "import json\n\n\ndef handler(request):\n    return json.loads(request.body)\n"
        head = f"import json\n\n\ndef handler(request):\n    return eval(request.body)  # {number}\n"
        github.add_pr("acme", "shop", number, [FakeFile(f"svc/handler_{number}.py", base=base, head=head)],
                      title=f"Handler change {number}", body="Spike for the autoscaling benchmark.")
        urls.append(github.pr_url("acme", "shop", number))
    return urls


def run(reviews: int, latency_s: float, csv_path: Path, png_path: Path, settle_s: float,
        scale_down_timeout_s: float) -> str:
    autoscaling = load_apps()["reviews"].deployments[AGENT]["autoscaling_config"]
    low, high = int(autoscaling["min_replicas"]), int(autoscaling["max_replicas"])
    github, llm = FakeGitHub(), ScriptedLLM(latency_s=latency_s)
    github.start()
    llm.start()
    home = tempfile.mkdtemp(prefix="pr-review-bench-")
    with fresh_database(os.environ.get("DATABASE_URL")) as database_url:
        env = {"GITHUB_API_URL": github.url, "LLM_BASE_URL": llm.base_url, "LLM_MODEL": llm.model,
               "PR_REVIEW_HOME": home, "PR_REVIEW_HTTP_PORT": str(_free_port()),
               "PR_REVIEW_DASHBOARD_PORT": str(_free_port())}
        if database_url:
            env["DATABASE_URL"] = database_url
        os.environ.update(env)
        os.environ.pop("GITHUB_TOKEN", None)
        stack = LocalStack(load_settings(), with_llm_app=False)
        print("starting Ray, Serve and the review app...", flush=True)
        try:
            stack.start()
            _wait(lambda: agent_replicas() == (low, low), 120, "the agent pool at its minimum")
            urls = add_prs(github, reviews)
            with Client(stack.settings.api_url) as api, \
                    TimelineRecorder(os.environ["DATABASE_URL"]) as recorder:
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
        finally:
            stack.stop()
            github.stop()
            llm.stop()
    write_csv(samples, csv_path)
    plot(samples, png_path, max_replicas=high, spike_t=spike_t,
         title=f"{reviews} reviews at once, LLM latency {latency_s:g} s: ReviewAgent {low} → {high} → {low}")
    busy = [s for s in samples if s.running or s.pending]
    summary = (
        f"spike at t={spike_t:.0f} s; after it: {high} replicas running at +{up:.0f} s, queue drained at "
        f"+{drained:.0f} s, back to {low} replica(s) at +{down:.0f} s.\n"
        f"peak LLM calls in flight: {llm.peak_in_flight}; while busy: agent CPU max "
        f"{max(s.agent_cpu_pct for s in busy):.0f}% of one core (mean "
        f"{sum(s.agent_cpu_pct for s in busy) / len(busy):.0f}%), machine CPU max "
        f"{max(s.machine_cpu_pct for s in busy):.0f}%."
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
