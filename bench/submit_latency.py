"""`POST /v1/reviews` through Ray Serve against the same routes on a bare uvicorn, in one run.

For each lever (a way of running Serve's HTTP path), one local stack starts with it; beside it, the
ingress's routes (`IngressCore`) run on plain uvicorn in their own process against the same
database: the baseline, at the niceness Ray gives its workers (a Serve replica runs at 15; a plain
process at 0 would win every contest for the CPU on a busy machine). Both take the same load,
alternately, in two phases:

- idle: the agent pool is full of reviews waiting on a model that does not answer (no CPU spent);
- busy: 20 reviews run at once on a 2 s model, kept at 20 by a backlog.

Each load is `--clients` closed-loop clients sending `--requests` submits of new PRs each (so every
request records a new job: the reuse lookup and the INSERT with its event and NOTIFY), from a
separate process. Printed: throughput, p50, p99, errors of both, and Serve's ratios to uvicorn.

    python -m bench.submit_latency                          # before / HAProxy only / as shipped
    python -m bench.submit_latency --lever haproxy-2-mainloop --lever proxy
    python -m bench.submit_latency --list                   # every lever and what it sets
    python -m bench.submit_latency --routes                 # no Ray: what a query, an auth check cost
    PR_REVIEW_API_KEY=... python -m bench.submit_latency   # or --api-key: the stack's operator key,
                                                            # sent as `Authorization: Bearer`

The goal: Serve within 1.3x of uvicorn's throughput and p99, and p99 < 250 ms while 20 reviews run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import _bare_ingress
from bench._harness import _drop_database, _fresh_database, add_prs, bench_stack
from bench._load import LoadResult, Request, run_load
from serve_app.local import free_port
from serve_app.serve_config import DEFAULT_PATH
from tests.fakes import FakeGitHub

BUSY_REVIEWS = 20
BUSY_LLM_LATENCY_S = 2.0
BLOCKED_LLM_LATENCY_S = 3600.0  # the idle phase's model: calls wait until cancelled
# A pool of exactly BUSY_REVIEWS reviews at once: fixed replicas, no autoscaling (a replica starting
# mid-measurement would cost more CPU than the submits measured).
AGENT_POOL = {"ReviewAgent": {"autoscaling_config": None, "num_replicas": 4,
                              "max_ongoing_requests": BUSY_REVIEWS // 4, "max_queued_requests": 4}}


@dataclass(frozen=True)
class Lever:
    description: str
    env: dict[str, str] = field(default_factory=dict)  # set before ray.init: every Ray process inherits it
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)  # serve_config.yaml overrides
    config: dict[str, Any] = field(default_factory=dict)  # top-level serve_config.yaml keys
    bare: dict[str, str] = field(default_factory=dict)  # the uvicorn baseline's options (loop, http, auth, nice)
    direct_port: bool = False  # send to the ingress replica's own port (direct ingress without HAProxy)


def _ingress(**options: Any) -> dict[str, dict[str, Any]]:
    return {"ReviewIngress": options}


# serve_config.yaml runs the ingress's routes on its replica's main loop; this undoes that.
_USER_THREAD: dict[str, Any] = {
    "ray_actor_options": {"runtime_env": {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1"}}}}


_HAPROXY = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}  # also serve_app/local.py's default
_PROXY = {"RAY_SERVE_ENABLE_HA_PROXY": "0"}  # Serve's own proxy actor, as before
_MAIN_LOOP = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
_LOG_BUFFER = {"RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000"}
_NO_ACCESS_LOG = {"logging_config": {"enable_access_log": False}}

LEVERS: dict[str, Lever] = {
    "default": Lever("as shipped: HAProxy (serve_app/local.py), the ingress's routes on its replica's main loop "
                     "(serve_config.yaml)"),
    "before": Lever("as before: Serve's HTTP proxy actor, the routes on a second loop in another thread",
                    env=_PROXY, deployments=_ingress(**_USER_THREAD)),
    "haproxy-thread": Lever("HAProxy, the routes on a second loop in another thread",
                            env=_HAPROXY, deployments=_ingress(**_USER_THREAD)),
    # The levers measured one by one; unless named `mainloop`, the routes run in a thread, as before.
    "proxy": Lever("Serve's HTTP proxy actor in front of 1 ingress replica", env=_PROXY,
                   deployments=_ingress(**_USER_THREAD)),
    "proxy-2": Lever("the proxy, 2 ingress replicas", env=_PROXY, deployments=_ingress(num_replicas=2, **_USER_THREAD)),
    "proxy-nolog": Lever("the proxy, access logs off", env=_PROXY, config=_NO_ACCESS_LOG,
                         deployments=_ingress(**_USER_THREAD)),
    "proxy-mainloop": Lever("the proxy, the routes on the replica's main loop", env=_PROXY),
    "throughput": Lever("RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (requests still reach port 8000 via the proxy)",
                        env={**_PROXY, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, deployments=_ingress(**_USER_THREAD)),
    "direct": Lever("RAY_SERVE_ENABLE_DIRECT_INGRESS=1, load sent to the replica's own port (no proxy hop)",
                    env={**_PROXY, "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}, direct_port=True,
                    deployments=_ingress(**_USER_THREAD)),
    "haproxy": Lever("RAY_SERVE_ENABLE_HA_PROXY=1: HAProxy on port 8000, direct ingress behind it",
                     env=_HAPROXY, deployments=_ingress(**_USER_THREAD)),
    "haproxy-2": Lever("HAProxy, 2 ingress replicas", env=_HAPROXY,
                       deployments=_ingress(num_replicas=2, **_USER_THREAD)),
    "haproxy-nolog": Lever("HAProxy, access logs off", env=_HAPROXY, config=_NO_ACCESS_LOG,
                           deployments=_ingress(**_USER_THREAD)),
    "haproxy-mainloop": Lever("HAProxy, the routes on the replica's main loop (no thread hop per request)",
                              env={**_HAPROXY, **_MAIN_LOOP}),
    "haproxy-mainloop-buffered": Lever("HAProxy, main loop, request logs written 1000 at a time",
                                       env={**_HAPROXY, **_MAIN_LOOP, **_LOG_BUFFER}),
    "haproxy-2-mainloop": Lever("HAProxy, 2 ingress replicas, main loop",
                                env={**_HAPROXY, **_MAIN_LOOP}, deployments=_ingress(num_replicas=2)),
    "haproxy-2-mainloop-nolog": Lever("HAProxy, 2 ingress replicas, main loop, no access logs",
                                      env={**_HAPROXY, **_MAIN_LOOP}, deployments=_ingress(num_replicas=2),
                                      config=_NO_ACCESS_LOG),
    "bare-asyncio-h11": Lever("as shipped; baseline on uvicorn's pure-Python loop and parser (asyncio, h11)",
                              bare={"loop": "asyncio", "http": "h11"}),
    "bare-nice0": Lever("as shipped; baseline at the default niceness (0) instead of Ray's workers' (15)",
                        bare={"nice": "0"}),
    "haproxy-nice0": Lever("as shipped; Ray's worker processes at niceness 0 (RAY_worker_niceness=0), baseline too",
                           env={"RAY_worker_niceness": "0"}, bare={"nice": "0"}),
}
DEFAULT_LEVERS = ["before", "haproxy-thread", "default"]


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    requests: int

    @classmethod
    def of(cls, results: list[LoadResult]) -> Figures:
        latencies = [x for r in results for x in r.latencies_ms]
        merged = LoadResult(latencies, [e for r in results for e in r.errors], sum(r.wall_s for r in results))
        return cls(round(merged.rps, 1), round(merged.percentile(50), 1), round(merged.percentile(99), 1),
                   round(max(latencies), 1), len(merged.errors), len(latencies))


@dataclass
class LeverResult:
    lever: str
    phases: dict[str, dict[str, Figures]]  # phase -> {"serve": ..., "bare": ...}
    running: dict[str, int]  # reviews running at the end of each phase


def _ingress_port(default: int) -> int:
    """The port the ingress replica itself listens on (direct ingress), else `default`."""
    import psutil

    from serve_app.local import replica_pids

    for pid in replica_pids("ReviewIngress"):
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and 30000 <= conn.laddr.port < 31000:
                return int(conn.laddr.port)
    return default


def _config_file(lever: Lever, directory: Path) -> Path:
    config = yaml.safe_load(DEFAULT_PATH.read_text())
    config.update(lever.config)
    path = directory / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _cancel(api_url: str, ids: list[str], headers: dict[str, str]) -> None:
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as http:
        for job_id in ids:
            http.delete(f"/v1/reviews/{job_id}")


def _wait_running(api_url: str, headers: dict[str, str], at_least: int, timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    running = 0
    while time.monotonic() < deadline:
        running = int(httpx.get(f"{api_url}/readyz", headers=headers, timeout=30).json()["running"])
        if running >= at_least:
            break
        time.sleep(0.5)
    return running


def run_lever(name: str, *, clients: int, requests: int, rounds: int) -> LeverResult:
    """One stack with this lever, its uvicorn baseline beside it, both phases."""
    lever = LEVERS[name]
    env = {**lever.env, "PR_REVIEW_MAX_QUEUED_JOBS": "1000000"}
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp, \
            bench_stack(llm_latency_s=BLOCKED_LLM_LATENCY_S, env=env, overrides={**AGENT_POOL, **lever.deployments},
                        config_path=_config_file(lever, Path(tmp))) as stack:
        headers, serve_url = stack.headers, stack.api_url
        if lever.direct_port:
            serve_url = f"http://127.0.0.1:{_ingress_port(stack.local.settings.http_port)}"
        bare_port = free_port()
        bare = _bare_ingress.start(bare_port, loop=lever.bare.get("loop", "uvloop"),
                                   http=lever.bare.get("http", "httptools"), auth=lever.bare.get("auth", "none"),
                                   nice=int(lever.bare.get("nice", _bare_ingress.RAY_WORKER_NICENESS)))
        bare_url = f"http://127.0.0.1:{bare_port}"
        try:
            next_pr = 1
            blocked = add_prs(stack.github, BUSY_REVIEWS, start=next_pr)
            next_pr += BUSY_REVIEWS
            with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as http:
                blocked_ids = [http.post("/v1/reviews", json={"pr_url": url}).json()["id"] for url in blocked]
            stack.llm.wait_until(lambda llm: llm.in_flight >= BUSY_REVIEWS, timeout_s=120)

            phases: dict[str, dict[str, Figures]] = {}
            running: dict[str, int] = {}
            for phase in ("idle", "busy"):
                if phase == "busy":  # the blocked reviews go; the backlog runs on a 2 s model
                    stack.llm.latency_s = BUSY_LLM_LATENCY_S
                    _cancel(stack.api_url, blocked_ids, headers)
                    _wait_running(stack.api_url, headers, BUSY_REVIEWS)
                    time.sleep(5)  # past the first steps of the reviews just started
                results: dict[str, list[LoadResult]] = {"bare": [], "serve": []}
                for _ in range(rounds):
                    for target, url in (("bare", bare_url), ("serve", serve_url)):
                        urls = add_prs(stack.github, clients * requests, start=next_pr, files=2)
                        next_pr += clients * requests
                        per_client = [[Request("POST", "/v1/reviews", {"pr_url": u}) for u in urls[i::clients]]
                                      for i in range(clients)]
                        results[target].append(run_load(url, per_client, headers=headers))
                phases[phase] = {target: Figures.of(r) for target, r in results.items()}
                running[phase] = int(httpx.get(f"{stack.api_url}/readyz", headers=headers,
                                               timeout=30).json()["running"])
        finally:
            _bare_ingress.stop(bare)
    return LeverResult(name, phases, running)


def run_routes(*, clients: int, requests: int, rounds: int) -> dict[str, Figures]:
    """The routes on bare uvicorn only (no Ray, idle): what one query, the reuse lookup and an
    API-key check cost per request, from the differences between rows."""
    github = FakeGitHub()
    github.start()
    database_url = _fresh_database()
    api_key = os.environ.get("PR_REVIEW_API_KEY") or "bench-routes-key"
    env = {"GITHUB_API_URL": github.url, "DATABASE_URL": database_url, "PR_REVIEW_MAX_QUEUED_JOBS": "1000000",
           "PR_REVIEW_API_KEYS": f"bench:{api_key}", "LLM_BASE_URL": "http://127.0.0.1:9/v1"}
    headers = {"Authorization": f"Bearer {api_key}"}
    variants = {"product": ("product", "none", "on"), "one-statement": ("one-statement", "none", "on"),
                "no-pool-check": ("product", "none", "off"), "auth-memory": ("product", "memory", "on"),
                "auth-db": ("product", "db", "on")}
    seed = add_prs(github, 1, start=1)[0]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with _bare_ingress.running(port, env=env):
            job_id = httpx.post(f"{url}/v1/reviews", json={"pr_url": seed}, headers=headers, timeout=30).json()["id"]
        next_pr = 10
        rows: dict[str, tuple[str, str]] = {  # row -> (server variant, route)
            "GET /healthz (no query)": ("product", "healthz"),
            "GET /v1/reviews/{id} (1 query)": ("product", "get"),
            "POST /v1/reviews (2 queries)": ("product", "post"),
            "POST, no reuse lookup (1 query)": ("one-statement", "post"),
            "POST, no pool check per checkout": ("no-pool-check", "post"),
            "POST + key check, memory": ("auth-memory", "post"),
            "POST + key check, 1 query": ("auth-db", "post")}
        results: dict[str, list[LoadResult]] = {row: [] for row in rows}
        for _ in range(rounds):
            for row, (variant, route) in rows.items():
                if route == "post":
                    urls = add_prs(github, clients * requests, start=next_pr)
                    next_pr += clients * requests
                    reqs = [Request("POST", "/v1/reviews", {"pr_url": u}) for u in urls]
                else:
                    path = "/healthz" if route == "healthz" else f"/v1/reviews/{job_id}"
                    reqs = [Request("GET", path)] * (clients * requests)
                submit, auth, pool_check = variants[variant]
                # One server at a time: each holds up to 20 database connections.
                with _bare_ingress.running(port, env=env, submit=submit, auth=auth, pool_check=pool_check):
                    results[row].append(run_load(url, [reqs[i::clients] for i in range(clients)], headers=headers))
        return {row: Figures.of(r) for row, r in results.items()}
    finally:
        github.stop()
        _drop_database(database_url)


def print_routes(figures: dict[str, Figures], clients: int, requests: int, rounds: int) -> None:
    print(f"\nRoutes on bare uvicorn (niceness {_bare_ingress.RAY_WORKER_NICENESS}), no Ray, {clients} clients x "
          f"{requests} requests, {rounds} round(s)")
    print(f"{'request':<34}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'ms/req':>8}{'errors':>8}")
    for row, f in figures.items():
        # Closed loop on a saturated machine: 1000 / (req/s) is the machine time one request takes,
        # and the difference between two rows what the extra step costs.
        print(f"{row:<34}{f.rps:>8.1f}{f.p50_ms:>9.1f}{f.p99_ms:>9.1f}{1000 / f.rps:>8.2f}{f.errors:>8}")


def _ratio(serve: Figures, bare: Figures) -> tuple[float, float]:
    """(throughput ratio uvicorn/Serve, p99 ratio Serve/uvicorn): 1.0 is parity, higher is worse."""
    return bare.rps / serve.rps if serve.rps else float("inf"), serve.p99_ms / bare.p99_ms if bare.p99_ms else 0.0


def print_result(result: LeverResult, clients: int, requests: int, rounds: int) -> None:
    print(f"\n== {result.lever}: {LEVERS[result.lever].description}")
    print(f"   {clients} clients x {requests} submits, {rounds} round(s) per server and phase")
    print(f"   {'phase':<6}{'server':<8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    for phase, figures in result.phases.items():
        for target in ("bare", "serve"):
            f = figures[target]
            label = "uvicorn" if target == "bare" else "Serve"
            print(f"   {phase:<6}{label:<8}{f.rps:>8.1f}{f.p50_ms:>9.1f}{f.p99_ms:>9.1f}{f.max_ms:>9.1f}{f.errors:>8}")
        rps_ratio, p99_ratio = _ratio(figures["serve"], figures["bare"])
        print(f"   {phase:<6}ratio   throughput {rps_ratio:.2f}x, p99 {p99_ratio:.2f}x "
              f"(reviews running at the end: {result.running[phase]})")


def print_summary(results: list[LeverResult]) -> None:
    print("\nSummary: Serve against uvicorn in the same run (ratios: 1.00 is parity; goal <= 1.30)")
    print(f"{'lever':<26}{'phase':<6}{'Serve req/s':>12}{'p99 ms':>8}{'uvicorn req/s':>15}{'p99 ms':>8}"
          f"{'thr x':>7}{'p99 x':>7}{'errors':>8}")
    for result in results:
        for phase, figures in result.phases.items():
            serve, bare = figures["serve"], figures["bare"]
            rps_ratio, p99_ratio = _ratio(serve, bare)
            print(f"{result.lever:<26}{phase:<6}{serve.rps:>12.1f}{serve.p99_ms:>8.0f}{bare.rps:>15.1f}"
                  f"{bare.p99_ms:>8.0f}{rps_ratio:>7.2f}{p99_ratio:>7.2f}{serve.errors + bare.errors:>8}")
    for result in results:
        busy = result.phases.get("busy")
        if busy is not None:
            rps_ratio, p99_ratio = _ratio(busy["serve"], busy["bare"])
            met = rps_ratio <= 1.3 and p99_ratio <= 1.3 and busy["serve"].p99_ms < 250 and not busy["serve"].errors
            print(f"goal with {BUSY_REVIEWS} reviews running ({result.lever}): within 1.3x of uvicorn and "
                  f"p99 < 250 ms: {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=8, help="submits per client per load")
    parser.add_argument("--rounds", type=int, default=2, help="loads per server and phase, alternating")
    parser.add_argument("--lever", action="append", choices=sorted(LEVERS), help=f"default: {DEFAULT_LEVERS}")
    parser.add_argument("--api-key", default=os.environ.get("PR_REVIEW_API_KEY"),
                        help="the stack's operator key, sent as `Authorization: Bearer` on every request "
                             "(default: $PR_REVIEW_API_KEY, else a random one)")
    parser.add_argument("--list", action="store_true", help="print the levers and exit")
    parser.add_argument("--routes", action="store_true", help="bare uvicorn only (no Ray): per-query and "
                                                              "per-auth-check costs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one lever in this process
    args = parser.parse_args()
    if args.list:
        for name, lever in LEVERS.items():
            print(f"{name:<26}{lever.description}\n{'':<26}env {lever.env or '-'}, deployments "
                  f"{lever.deployments or '-'}, config {lever.config or '-'}, uvicorn {lever.bare or 'default'}")
        return
    if args.api_key:
        os.environ["PR_REVIEW_API_KEY"] = args.api_key  # the stack's operator key (bench._harness)
    if args.routes:
        print_routes(run_routes(clients=args.clients, requests=args.requests, rounds=args.rounds), args.clients,
                     args.requests, args.rounds)
        return
    if args.one:
        result = run_lever(args.one, clients=args.clients, requests=args.requests, rounds=args.rounds)
        print_result(result, args.clients, args.requests, args.rounds)
        if args.json:
            args.json.write_text(json.dumps(asdict(result)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        for name in args.lever or DEFAULT_LEVERS:
            # One process per lever: Ray reads these settings once per process, at import.
            out = Path(tmp) / f"{name}.json"
            command = [sys.executable, "-m", "bench.submit_latency", "--one", name, "--json", str(out),
                       "--clients", str(args.clients), "--requests", str(args.requests), "--rounds", str(args.rounds)]
            child_env = {**os.environ, **({"PR_REVIEW_API_KEY": args.api_key} if args.api_key else {})}
            if subprocess.run(command, check=False, env=child_env).returncode != 0 or not out.is_file():
                print(f"lever {name}: the run failed", file=sys.stderr)
                continue
            data = json.loads(out.read_text())
            results.append(LeverResult(data["lever"], {p: {t: Figures(**f) for t, f in v.items()}
                                                       for p, v in data["phases"].items()}, data["running"]))
    print_summary(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
