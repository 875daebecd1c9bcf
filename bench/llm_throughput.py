"""Throughput of an OpenAI-compatible chat endpoint: requests/s, output tokens/s and time to first
token (streaming), at 1, 4 and 16 requests in flight.

Each level runs `concurrency` closed-loop clients, `rounds` requests each, after one warm-up request.
With vLLM, `ignore_eos` makes every request write exactly `max_tokens`, so levels compare like for like.

    python -m bench.llm_throughput --base-url http://127.0.0.1:8000/llm/v1      # the in-cluster app
    python -m bench.llm_throughput --serve-local tiny                          # start one here first
    python -m bench.llm_throughput --base-url https://gpu-host/v1 --model Qwen/Qwen2.5-Coder-7B-Instruct \\
        --concurrency 1 4 16 64 --max-tokens 256 --out bench/out/llm_h100.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

# A review-shaped prompt: instructions and a small diff, a few hundred tokens.
PROMPT = """You are reviewing a pull request. Point out bugs, security problems and risky changes.

```diff
@@ -12,9 +12,14 @@ def deliver(event, url, attempts=3):
-    for attempt in range(attempts):
-        response = requests.post(url, json=event, timeout=5)
-        if response.ok:
-            return True
+    for attempt in range(attempts):
+        try:
+            response = requests.post(url, json=event, timeout=5, verify=False)
+        except requests.RequestException:
+            time.sleep(RETRY_DELAY_S * attempt)
+            continue
+        if response.status_code < 500:
+            return True
     return False
@@ -40,6 +45,9 @@ def search(request):
+    query = request.query_params["q"]
+    rows = db.execute(f"SELECT * FROM invoices WHERE customer LIKE '%{query}%'")
+    return [dict(row) for row in rows]
```
"""


@dataclass
class LevelResult:
    concurrency: int
    completed: int
    failed: int
    wall_s: float
    prompt_tokens: int
    output_tokens: int
    requests_per_s: float
    output_tokens_per_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    latency_p50_s: float
    latency_p95_s: float
    errors: list[str]


@dataclass
class _Sample:
    ttft_s: float
    latency_s: float
    output_tokens: int
    prompt_tokens: int


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _stream_once(http: httpx.AsyncClient, body: dict[str, Any]) -> _Sample:
    """One streamed completion: time to the first content chunk, total time, output tokens."""
    started = time.perf_counter()
    first: float | None = None
    usage_tokens: int | None = None
    prompt_tokens = 0
    chunks = 0
    async with http.stream("POST", "/chat/completions", json=body) as response:
        if response.status_code >= 400:
            await response.aread()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if event.get("usage"):
                usage_tokens = int(event["usage"].get("completion_tokens") or 0)
                prompt_tokens = int(event["usage"].get("prompt_tokens") or 0)
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter() - started
    latency = time.perf_counter() - started
    # Usage is exact; a content chunk is one token only for servers that stream token by token.
    return _Sample(first if first is not None else latency, latency,
                   usage_tokens if usage_tokens is not None else chunks, prompt_tokens)


async def _client(http: httpx.AsyncClient, body: dict[str, Any], rounds: int, samples: list[_Sample],
                  errors: list[str]) -> None:
    for _ in range(rounds):
        try:
            samples.append(await _stream_once(http, body))
        except (httpx.HTTPError, RuntimeError, json.JSONDecodeError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])


async def discover_model(http: httpx.AsyncClient) -> str:
    response = await http.get("/models")
    response.raise_for_status()
    models = response.json().get("data") or []
    if not models:
        raise RuntimeError("the endpoint serves no model")
    return str(models[0]["id"])


async def run_benchmark(base_url: str, *, model: str | None, concurrency_levels: list[int], rounds: int = 4,
                        max_tokens: int = 128, timeout_s: float = 300.0, api_key: str | None = None,
                        ignore_eos: bool = True, prompt: str = PROMPT) -> list[LevelResult]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=max(concurrency_levels) + 1)
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s,
                                 limits=limits) as http:
        body: dict[str, Any] = {
            "model": model or await discover_model(http),
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True},
        }
        if ignore_eos:
            body["ignore_eos"] = True  # a vLLM extension: fixed output length
        await _stream_once(http, body)  # warm-up: first-request setup stays out of the figures
        results = []
        for concurrency in concurrency_levels:
            samples: list[_Sample] = []
            errors: list[str] = []
            started = time.perf_counter()
            await asyncio.gather(*(_client(http, body, rounds, samples, errors) for _ in range(concurrency)))
            wall = time.perf_counter() - started
            tokens = sum(s.output_tokens for s in samples)
            results.append(LevelResult(
                concurrency=concurrency, completed=len(samples), failed=len(errors), wall_s=round(wall, 3),
                prompt_tokens=sum(s.prompt_tokens for s in samples), output_tokens=tokens,
                requests_per_s=round(len(samples) / wall, 3),
                output_tokens_per_s=round(tokens / wall, 1),
                ttft_p50_s=round(percentile([s.ttft_s for s in samples], 50), 4),
                ttft_p95_s=round(percentile([s.ttft_s for s in samples], 95), 4),
                latency_p50_s=round(percentile([s.latency_s for s in samples], 50), 4),
                latency_p95_s=round(percentile([s.latency_s for s in samples], 95), 4),
                errors=errors[:5]))
        return results


def markdown_table(results: list[LevelResult]) -> str:
    lines = ["| concurrent | requests | req/s | output tok/s | TTFT p50 | TTFT p95 | latency p50 | failed |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.concurrency} | {r.completed} | {r.requests_per_s:.2f} | "
                     f"{r.output_tokens_per_s:.1f} | {r.ttft_p50_s * 1000:.0f} ms | "
                     f"{r.ttft_p95_s * 1000:.0f} ms | {r.latency_p50_s:.2f} s | {r.failed} |")
    return "\n".join(lines)


@contextmanager
def serve_locally(model: str, home: Path) -> Iterator[str]:
    """Ray + the `llm` app (CPU profile) on this machine, serving `model` ("tiny": the test model)."""
    import ray
    from ray import serve

    from serve_app.llm_app import build_llm_app
    from serve_app.llm_models import TINY_MODEL_DIRNAME, build_tiny_model

    if model == "tiny":
        model = str(build_tiny_model(home / "models" / TINY_MODEL_DIRNAME))
    port = int(os.environ.get("PR_REVIEW_HTTP_PORT", "8000"))
    ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_llm_app({"profile": "cpu", "model": model}), name="llm", route_prefix="/llm",
                  blocking=False)
        base_url = f"http://127.0.0.1:{port}/llm/v1"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base_url}/models", timeout=10).json().get("data"):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(2)
        else:
            raise RuntimeError("the local llm app did not come up within 15 minutes")
        yield base_url
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=os.environ.get("LLM_BASE_URL", "http://127.0.0.1:8000/llm/v1"))
    parser.add_argument("--model", default=os.environ.get("LLM_MODEL"), help="default: the first served")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=4, help="requests per client at each level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--no-ignore-eos", action="store_true", help="for servers that are not vLLM")
    parser.add_argument("--serve-local", metavar="MODEL", help="start Ray + the CPU llm app here first")
    parser.add_argument("--home", type=Path,
                        default=Path(os.environ.get("PR_REVIEW_HOME", "~/.local/share/pr-review")))
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the table

    def bench(base_url: str, model: str | None) -> list[LevelResult]:
        return asyncio.run(run_benchmark(
            base_url, model=model, concurrency_levels=args.concurrency, rounds=args.rounds,
            max_tokens=args.max_tokens, timeout_s=args.timeout_s,
            api_key=os.environ.get("LLM_API_KEY"), ignore_eos=not args.no_ignore_eos))

    if args.serve_local:
        with serve_locally(args.serve_local, args.home.expanduser()) as base_url:
            results = bench(base_url, None)
    else:
        results = bench(args.base_url, args.model)
    print(markdown_table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"base_url": args.base_url if not args.serve_local else "local",
                                        "max_tokens": args.max_tokens, "rounds": args.rounds,
                                        "levels": [asdict(r) for r in results]}, indent=2))
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
