"""The CPU profile's engine caches prefixes, and a review's group prompts share theirs: the second
group prompt of a review finds the part before its diff in vLLM's cache (vLLM's own counters, read
from Ray's Prometheus endpoint). Counts, not timings; bench/prefix_cache.py measures the speed-up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from graph.prompts import group_prompt, guidance, other_changes, scope_note, template
from graph.schemas import MAX_FINDINGS_PER_GROUP
from serve_app.llm_app import PROFILES

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

PR = {"title": "Webhook deliveries through a retrying outbox worker",
      "body": "Deliveries used to be sent inline from the request handler; now a worker sends them from an "
              "outbox table with exponential backoff, and exposes the queue depth as a metric.\n" * 4,
      "commit_messages": ["Add the outbox table", "Send deliveries from a worker", "Review fixes"]}
CONTEXT = {"guidance": guidance(None, "security", None), "other_changes": other_changes([]),
           "scope_note": scope_note(None)}
BLOCK_TOKENS = 128  # vLLM caches whole blocks (128 tokens on the CPU backend): a prefix hits up to its last one


def _diff(path: str, lines: int) -> str:
    body = "\n".join(f"R{n:<5}+ | total_{n} = sum(row.amount for row in rows if row.customer == {n})"
                     for n in range(1, lines + 1))
    return f'<pr_file path="{path}" language="python">\n@@ -0,0 +1,{lines} @@\n{body}\n</pr_file>'


def _cache_counters(model_id: str) -> tuple[float, float]:
    """(queries, hits) of vLLM's prefix cache for `model_id`, in prompt tokens, from Ray's metrics."""
    import ray

    port = next(node["MetricsExportPort"] for node in ray.nodes() if node["Alive"])
    totals = {"ray_vllm_prefix_cache_queries_total": 0.0, "ray_vllm_prefix_cache_hits_total": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name in totals and sample.labels.get("model_name") == model_id:
                totals[sample.name] += sample.value
    return totals["ray_vllm_prefix_cache_queries_total"], totals["ray_vllm_prefix_cache_hits_total"]


def _counted(model_id: str, queries_at_least: float, timeout_s: float = 60.0) -> tuple[float, float]:
    """The counters once the queries reach `queries_at_least` (Ray exports them every second here)."""
    deadline = time.monotonic() + timeout_s
    counters = _cache_counters(model_id)
    while counters[0] < queries_at_least and time.monotonic() < deadline:
        time.sleep(1)
        counters = _cache_counters(model_id)
    return counters


def _wait_for_route(stack: Any, timeout_s: float = 120.0) -> None:
    """The `llm` app answers on its route (its route reaches HAProxy a moment after the app runs)."""
    deadline = time.monotonic() + timeout_s
    url = f"{stack.local.settings.api_url}/llm/v1/models"
    while httpx.get(url, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, f"{url} does not answer"
        time.sleep(1)


def _ask(stack: Any, model_id: str, prompt: str) -> int:
    """One group call as the agents send it (system prompt, then the group prompt); its prompt tokens."""
    body = {"model": model_id, "temperature": 0, "max_tokens": 8,
            "messages": [{"role": "system", "content": template("system")}, {"role": "user", "content": prompt}]}
    response = httpx.post(f"{stack.local.settings.api_url}/llm/v1/chat/completions", json=body, timeout=300)
    response.raise_for_status()
    return int(response.json()["usage"]["prompt_tokens"])


def test_cpu_profile_caches_the_prefix_a_reviews_group_prompts_share(llm_stack: Any, tiny_model: Path) -> None:
    assert PROFILES["cpu"].engine_kwargs["enable_prefix_caching"] is True
    model_id = str(tiny_model)
    diffs = [_diff("src/outbox.py", 40), _diff("src/worker.py", 40)]
    first, second = (group_prompt("acme/shop", 7, PR, CONTEXT, diff, MAX_FINDINGS_PER_GROUP) for diff in diffs)
    shared = first[:first.index(diffs[0])]
    assert second.startswith(shared)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    messages = [{"role": "system", "content": template("system")}, {"role": "user", "content": shared}]
    chat_prefix = str(tokenizer.apply_chat_template(messages, tokenize=False))
    shared_tokens = len(tokenizer(chat_prefix.rsplit("<|end|>", 1)[0], add_special_tokens=False)["input_ids"])

    _wait_for_route(llm_stack)
    time.sleep(3)  # earlier engine activity reaches the counters before the baseline
    queries, _ = _cache_counters(model_id)
    first_tokens = _ask(llm_stack, model_id, first)
    queries, hits = _counted(model_id, queries + first_tokens)
    second_tokens = _ask(llm_stack, model_id, second)
    _, hits_after = _counted(model_id, queries + second_tokens)

    # The second group's prompt found what it shares with the first in the cache (up to the last
    # full block, give or take a token merged across the boundary): the system prompt, the
    # instructions and the PR's text, about half of its tokens here.
    found = hits_after - hits
    assert found >= shared_tokens - BLOCK_TOKENS - 8, (found, shared_tokens, second_tokens)
    assert shared_tokens >= 0.4 * second_tokens, (shared_tokens, second_tokens)


def test_the_gpu_profiles_router_is_ray_serve_llms_prefix_aware_router() -> None:
    from ray.serve.config import RequestRouterConfig
    from ray.serve.llm.request_router import PrefixCacheAffinityRouter

    config = RequestRouterConfig(**PROFILES["gpu"].request_router or {})
    assert config.get_request_router_class() is PrefixCacheAffinityRouter
