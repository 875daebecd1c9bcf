"""The in-cluster model for real: vLLM (CPU build) inside a Ray Serve LLM app beside the review apps,
serving a tiny model built at test time. The agents reach it with LLM_BASE_URL unset."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.llm_throughput import run_benchmark
from graph.schemas import SUMMARY_SCHEMA
from graph.tokens import served_context_tokens, tokenizer_counter
from prreview.demo import install_sample_pr
from prreview.models import ReviewResource
from serve_app.llm_app import PROFILES, deployment_name
from serve_app.llm_models import resolve_model
from tests.helpers import assert_findings_on_diff, wait_terminal

# Deploying the engine takes one to four minutes on two busy cores; a review then takes seconds.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

CPU = PROFILES["cpu"]


def llm_url(stack: Any) -> str:
    return f"{stack.local.settings.api_url}/llm/v1"


def vllm_token_totals(model_id: str) -> tuple[float, float]:
    """vLLM's own prompt and generation token counters for `model_id`, from Ray's Prometheus endpoint."""
    import ray

    port = next(node["MetricsExportPort"] for node in ray.nodes() if node["Alive"])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    totals = {"ray_vllm_prompt_tokens_total": 0.0, "ray_vllm_generation_tokens_total": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals and sample.labels.get("model_name") == model_id:
                totals[sample.name] += sample.value
    return totals["ray_vllm_prompt_tokens_total"], totals["ray_vllm_generation_tokens_total"]


def wait_token_totals(model_id: str, expected: tuple[float, float],
                      timeout_s: float = 60.0) -> tuple[float, float]:
    """vLLM's counters once they reach `expected` (Ray exports them every second here), else the last."""
    deadline = time.monotonic() + timeout_s
    totals = vllm_token_totals(model_id)
    while totals != expected and time.monotonic() < deadline:
        time.sleep(1)
        totals = vllm_token_totals(model_id)
    return totals


def test_a_review_runs_end_to_end_through_vllm(llm_stack: Any, tiny_model: Path) -> None:
    model_id = str(tiny_model)
    time.sleep(3)  # let any earlier engine activity reach the counters before the baseline
    before = vllm_token_totals(model_id)
    job = llm_stack.api.submit(install_sample_pr(llm_stack.github))
    done = wait_terminal(llm_stack.api, job["id"], timeout_s=300)

    assert done["status"] == "succeeded", done["error"]
    resource = ReviewResource.model_validate(done)
    assert resource.review is not None and resource.review.model == model_id
    assert resource.review.files_reviewed
    assert_findings_on_diff(llm_stack.github, done)  # non-empty, and each on a line the diff shows
    from_model = [f for f in resource.review.findings if "model" in (f.source or "")]
    assert from_model, "no finding came from the model"

    usage = done["usage"]
    assert usage["llm_calls"] >= 2  # at least one diff group and the summary
    expected = (before[0] + usage["prompt_tokens"], before[1] + usage["completion_tokens"])
    assert wait_token_totals(model_id, expected) == expected, "the agent's usage differs from vLLM's counters"


def test_scaling_and_concurrency_settings_reach_serve(llm_stack: Any, tiny_model: Path) -> None:
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    app = details["applications"]["llm"]
    assert app["status"] == "RUNNING" and app["route_prefix"] == "/llm"
    name = f"LLMServer:{deployment_name(resolve_model(str(tiny_model)))}"
    deployment = app["deployments"][name]
    assert deployment["status"] == "HEALTHY"
    config = deployment["deployment_config"]
    assert config["max_ongoing_requests"] == CPU.max_ongoing_requests
    scaling = config["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (CPU.autoscaling.min_replicas,
                                                                   CPU.autoscaling.max_replicas)
    assert scaling["target_ongoing_requests"] == CPU.autoscaling.target_ongoing_requests
    assert len([r for r in deployment["replicas"] if r["state"] == "RUNNING"]) == 1


def test_openai_route_serves_guided_json_counted_by_the_models_tokenizer(llm_stack: Any,
                                                                         tiny_model: Path) -> None:
    models = httpx.get(f"{llm_url(llm_stack)}/models", timeout=30).json()["data"]
    assert [m["id"] for m in models] == [str(tiny_model)]
    assert served_context_tokens(models[0]) == CPU.max_model_len

    messages = [{"role": "user", "content": "Summarise this change: +retry_delay = 2.0  # seconds"}]
    body = {"model": str(tiny_model), "messages": messages, "temperature": 0, "max_tokens": 200,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "review_summary", "schema": SUMMARY_SCHEMA, "strict": True}}}
    answer = httpx.post(f"{llm_url(llm_stack)}/chat/completions", json=body, timeout=120).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "stop"
    summary = json.loads(choice["message"]["content"])
    assert set(summary) == {"summary", "verdict"}
    assert summary["verdict"] in SUMMARY_SCHEMA["properties"]["verdict"]["enum"]

    # Prompt packing counts with the served model's tokenizer: the same count vLLM reports.
    from transformers import AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(tiny_model).apply_chat_template(messages, tokenize=False,
                                                                           add_generation_prompt=True)
    assert tokenizer_counter(str(tiny_model))(prompt) == answer["usage"]["prompt_tokens"]


def test_throughput_bench_measures_the_served_model(llm_stack: Any) -> None:
    levels = asyncio.run(run_benchmark(llm_url(llm_stack), model=None, concurrency_levels=[1, 4], rounds=1,
                                       max_tokens=16, timeout_s=120))
    assert [level.concurrency for level in levels] == [1, 4]
    for level in levels:
        assert level.failed == 0 and level.completed == level.concurrency
        assert level.requests_per_s > 0 and level.output_tokens_per_s > 0
        assert 0 < level.ttft_p50_s <= level.latency_p50_s
        assert level.output_tokens == 16 * level.completed  # ignore_eos: every request writes max_tokens
