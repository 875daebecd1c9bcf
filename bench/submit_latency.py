"""p50/p99 of POST /v1/reviews from 50 concurrent clients while 20 reviews run on a 2 s LLM.

Baseline in the same run: GET /healthz through the same proxy and ingress under the same load,
so the ratio shows what recording a job durably costs over a no-op request.

    python bench/submit_latency.py [--clients 50] [--requests 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from bench._harness import add_prs, bench_stack, percentile


async def _client(http: httpx.AsyncClient, urls: list[str], method: str, path: str,
                  latencies: list[float], errors: list[str]) -> None:
    for url in urls:
        started = time.perf_counter()
        try:
            if method == "POST":
                response = await http.post(path, json={"pr_url": url})
            else:
                response = await http.get(path)
            if response.status_code >= 400:
                errors.append(f"{response.status_code}")
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
        latencies.append((time.perf_counter() - started) * 1000)


async def _load(api_url: str, method: str, path: str,
                per_client: list[list[str]]) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=len(per_client), max_keepalive_connections=len(per_client))
    async with httpx.AsyncClient(base_url=api_url, timeout=30, limits=limits) as http:
        await asyncio.gather(*(_client(http, urls, method, path, latencies, errors) for urls in per_client))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10, help="per client")
    parser.add_argument("--background", type=int, default=20, help="reviews running meanwhile")
    args = parser.parse_args()

    with bench_stack(llm_latency_s=2.0) as stack:
        background = add_prs(stack.github, args.background, start=1)
        with httpx.Client(base_url=stack.api_url) as http:
            for url in background:
                http.post("/v1/reviews", json={"pr_url": url}).raise_for_status()
        time.sleep(3)  # let them start calling the 2 s LLM
        urls = add_prs(stack.github, args.clients * args.requests, start=1000)
        per_client = [urls[i::args.clients] for i in range(args.clients)]
        warm = add_prs(stack.github, 20, start=90_000)
        asyncio.run(_load(stack.api_url, "POST", "/v1/reviews", [warm]))  # warm connections and pools
        solo, _ = asyncio.run(_load(stack.api_url, "GET", "/healthz", [warm]))  # one client: the floor
        started = time.perf_counter()
        base, base_errors = asyncio.run(_load(stack.api_url, "GET", "/healthz", per_client))
        base_rps = len(base) / (time.perf_counter() - started)
        started = time.perf_counter()
        submit, submit_errors = asyncio.run(_load(stack.api_url, "POST", "/v1/reviews", per_client))
        submit_rps = len(submit) / (time.perf_counter() - started)
        running = httpx.get(f"{stack.api_url}/readyz", timeout=60).json()

    print(f"{args.clients} clients x {args.requests} requests, {args.background} reviews running on a 2 s LLM "
          f"(at the end: {running['running']} running, {running['queued']} queued)")
    print(f"{'request':<28}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>8}{'errors':>8}")
    rows: tuple[tuple[str, list[float], list[str], float], ...] = (
        ("GET /healthz, 1 client", solo, [], float("nan")),
            (f"GET /healthz, {args.clients} clients", base, base_errors, base_rps),
            (f"POST /v1/reviews, {args.clients} clients", submit, submit_errors, submit_rps))
    for name, values, errors, rps in rows:
        print(f"{name:<28}{percentile(values, 50):>9.1f}{percentile(values, 99):>9.1f}{max(values):>9.1f}"
              f"{rps:>8.0f}{len(errors):>8}")
    print(f"ratio submit/healthz: p50 {percentile(submit, 50) / percentile(base, 50):.2f}x, "
          f"p99 {percentile(submit, 99) / percentile(base, 99):.2f}x")
    met = percentile(submit, 99) < 50 and not submit_errors
    print(f"goal p99 < 50 ms with no errors: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
