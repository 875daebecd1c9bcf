"""pr-review's metrics, scraped from Ray's Prometheus endpoint while reviews run."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import add_pr, wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# Ray workers report their metrics every 10 s by default; every second keeps the test short.
FAST_METRICS = {"RAY_metrics_report_interval_ms": "1000"}
DASHBOARD = Path(__file__).parents[2] / "cluster" / "grafana" / "pr-review-dashboard.json"
Samples = list[tuple[str, dict[str, str], float]]


def scrape() -> Samples:
    """Every sample on this node's Prometheus endpoint (the test process is the Ray driver)."""
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("ray_pr_review_")]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over replicas (and other labels) of `name`'s samples that carry `labels`."""
    return sum(value for sample, tags, value in samples
               if sample == name and all(tags.get(k) == v for k, v in labels.items()))


# Measured all the time, idle or not: it never settles.
CONTINUOUS = {"ray_pr_review_event_loop_lag_seconds"}


def _canonical(samples: Samples) -> list[tuple[str, list[tuple[str, str]], float]]:
    return sorted((name, sorted(labels.items()), value) for name, labels, value in samples
                  if name not in CONTINUOUS)


def settled(attempts: int = 20) -> Samples:
    """A scrape that no longer changes: earlier activity has been reported."""
    previous = scrape()
    for _ in range(attempts):
        time.sleep(2.5)
        current = scrape()
        if _canonical(current) == _canonical(previous):
            return current
        previous = current
    raise AssertionError("the metrics kept changing while nothing ran")


def wait_metrics(check: Callable[[Samples], bool], what: str, timeout_s: float = 60.0,
                 explain: Callable[[Samples], object] = lambda _: "") -> Samples:
    """The first scrape that passes `check`."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape()
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: {explain(samples)}")
        time.sleep(0.5)


def test_metrics_move_as_reviews_run(stacks) -> None:
    stack = stacks.get(FAST_METRICS)
    stack.llm.reset()
    before = settled()

    stack.llm.latency_s = 1.5  # long enough for the gauges to see reviews in flight; under the 3 s timeout
    try:
        urls = [add_pr(stack.github) for _ in range(3)]
        ids = [stack.api.submit(url)["id"] for url in urls]
        running = wait_metrics(lambda s: total(s, "ray_pr_review_reviews_running") >= 1,
                               "the running gauge to show reviews in flight")
        assert total(running, "ray_pr_review_reviews_running") <= 3
        cancelled = stack.api.submit(add_pr(stack.github))["id"]
        stack.api.cancel(cancelled)
        missing = stack.api.submit(stack.github.pr_url("acme", "shop", 88_888))["id"]
        jobs = [wait_terminal(stack.api, review_id) for review_id in ids]
    finally:
        stack.llm.latency_s = 0.0
    assert [job["status"] for job in jobs] == ["succeeded"] * 3, [job["error"] for job in jobs]
    assert wait_terminal(stack.api, cancelled)["status"] == "cancelled"
    failed = wait_terminal(stack.api, missing)
    assert failed["status"] == "failed", failed
    calls = [c for c in stack.llm.requests if c.outcome == "completed"]

    expected: list[tuple[str, dict[str, str], float]] = [
        ("ray_pr_review_reviews_submitted_total", {}, 5),
        ("ray_pr_review_reviews_finished_total", {"status": "succeeded"}, 3),
        ("ray_pr_review_reviews_finished_total", {"status": "cancelled"}, 1),
        ("ray_pr_review_reviews_finished_total", {"status": "failed"}, 1),
        ("ray_pr_review_llm_calls_total", {"model": "scripted-reviewer", "outcome": "ok"}, len(calls)),
        ("ray_pr_review_review_duration_seconds_count", {"status": "succeeded"}, 3),
        ("ray_pr_review_step_duration_seconds_count", {"step": "summarize", "outcome": "ok"}, 3),
    ]

    def behind(now: Samples) -> list[str]:
        """What the scrape does not show yet."""
        lagging = [f"{name}{labels} +{grown} of +{by}" for name, labels, by in expected
                   if (grown := total(now, name, **labels) - total(before, name, **labels)) < by]
        return lagging + [f"{gauge} = {total(now, gauge)}" for gauge in
                          ("ray_pr_review_reviews_running", "ray_pr_review_queue_depth") if total(now, gauge)]

    after = wait_metrics(lambda s: not behind(s), "the counters to count the reviews and the gauges to "
                         "return to zero", explain=behind)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("ray_pr_review_reviews_submitted_total") == 5
    assert delta("ray_pr_review_reviews_finished_total", status="succeeded") == 3
    assert delta("ray_pr_review_review_attempts_total", kind="first") >= 4  # the cancelled one may not start
    assert delta("ray_pr_review_llm_calls_total", model="scripted-reviewer", outcome="ok") == len(calls)
    assert delta("ray_pr_review_llm_tokens_total", model="scripted-reviewer", kind="prompt") == sum(
        c.usage["prompt_tokens"] for c in calls)
    assert delta("ray_pr_review_llm_tokens_total", model="scripted-reviewer", kind="completion") == sum(
        c.usage["completion_tokens"] for c in calls)
    assert delta("ray_pr_review_llm_call_duration_seconds_count", model="scripted-reviewer") == len(calls)
    for step in ("fetch_pr", "plan", "review_group", "collect", "summarize"):
        assert delta("ray_pr_review_step_duration_seconds_count", step=step, outcome="ok") >= 3, step
    assert delta("ray_pr_review_step_duration_seconds_count", step="fetch_pr", outcome="error") >= 1  # 404
    # every review took at least its two scripted 1.5 s LLM calls: none lands in the bucket up to 1 s
    assert delta("ray_pr_review_review_duration_seconds_bucket", status="succeeded", le="1.0") == 0
    assert delta("ray_pr_review_review_duration_seconds_bucket", status="succeeded", le="+Inf") == 3
    # Serve tags tell the replicas apart: the ingress counts submissions, the agents the rest
    deployments = {tags.get("deployment") for name, tags, _ in after
                   if name == "ray_pr_review_reviews_submitted_total"}
    assert deployments == {"ReviewIngress"}
    assert {tags.get("deployment") for name, tags, _ in after if name == "ray_pr_review_llm_calls_total"} == {
        "ReviewAgent"}


def test_grafana_dashboard_charts_only_metrics_that_exist(stacks) -> None:
    """Each pr-review metric the dashboard queries is one that Ray exports."""
    stack = stacks.get(FAST_METRICS)
    assert wait_terminal(stack.api, stack.api.submit(add_pr(stack.github))["id"])["status"] == "succeeded"
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    names = [m for e in exprs for m in re.findall(r"ray_pr_review_\w+", e)]
    queried = {re.sub(r"_(bucket|count|sum)$", "", m) for m in names}
    exported = {re.sub(r"_(bucket|count|sum)$", "", name) for name, _, _ in wait_metrics(
        lambda s: {"ray_pr_review_queue_depth", "ray_pr_review_llm_calls_total"} <= {n for n, _, _ in s},
        "pr-review metrics on the endpoint")}
    assert queried <= exported, queried - exported
    assert len(queried) == 10
    uids = [p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p]
    assert set(uids) == {"${datasource}"}
