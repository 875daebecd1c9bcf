"""The review service as an operator deploys it: serve_config.yaml, `serve deploy`ed onto a Ray
cluster of `ray start` processes (tests/ray_cluster.py), configured only by the environment a pod
would have, and used only through its HTTP API with an operator key.

Tests that lose a node or the database use this instead of tests/stack.py, whose stack lives in
the test process (Ray once per process) and could not lose anything without taking pytest along.
"""

from __future__ import annotations

import copy
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from serve_app.serve_config import LLM_APP, REVIEWS_APP, load_config
from tests.fakes import LLMCall
from tests.helpers import schema_name
from tests.ray_cluster import RayCluster, service_env

TERMINAL = {"succeeded", "failed", "cancelled"}
# What a test gives the service besides its endpoints: short leases and sweeps, so that the
# recovery of a lost worker takes seconds rather than the production default of 15 s.
FAST_RECOVERY = {"PR_REVIEW_LEASE_S": "5", "PR_REVIEW_SWEEP_INTERVAL_S": "1"}


def operator_config(http_port: int, *, agent_min_replicas: int | None = None) -> dict[str, Any]:
    """serve_config.yaml as the test deploys it, changed only where a test must: the Serve HTTP
    port (several clusters share this machine), the `llm` application left out (the agents use an
    external OpenAI-compatible endpoint, LLM_BASE_URL), and optionally ReviewAgent's min_replicas."""
    config = copy.deepcopy(load_config())
    config["http_options"]["port"] = http_port
    config["applications"] = [a for a in config["applications"] if a["name"] != LLM_APP]
    if agent_min_replicas is not None:
        reviews = next(a for a in config["applications"] if a["name"] == REVIEWS_APP)
        agent = next(d for d in reviews["deployments"] if d["name"] == "ReviewAgent")
        agent["autoscaling_config"]["min_replicas"] = agent_min_replicas
    return config


def service_settings(*, database_url: str, llm_base_url: str, github_api_url: str, home: str,
                     api_key: str, **extra: str) -> dict[str, str]:
    """The service's environment as a pod spec sets it (README, "Configuration")."""
    return service_env(DATABASE_URL=database_url, LLM_BASE_URL=llm_base_url, LLM_MODEL="scripted-reviewer",
                       GITHUB_API_URL=github_api_url, PR_REVIEW_HOME=home,
                       PR_REVIEW_API_KEYS=f"ci:{api_key}", **FAST_RECOVERY, **extra)


@dataclass
class DeployedService:
    """The HTTP API of a service deployed on `cluster`, called with the operator key."""

    cluster: RayCluster
    http_port: int
    api_key: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=10,
                                 headers={"Authorization": f"Bearer {self.api_key}"})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def close(self) -> None:
        self.http.close()

    def deploy(self, config: dict[str, Any], *, ready_timeout_s: float = 240.0) -> None:
        self.cluster.serve_deploy(config)
        self.wait_ready(ready_timeout_s)

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until `/readyz` answers 200."""
        start = time.monotonic()
        last = ""
        while time.monotonic() - start < timeout_s:
            try:
                response = self.http.get("/readyz")
                if response.status_code == 200:
                    return time.monotonic() - start
                last = f"{response.status_code} {response.text[:300]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise AssertionError(f"not ready within {timeout_s:.0f} s: {last}\n{self.cluster.logs('serve/*.log', 1500)}")

    def _ok(self, response: httpx.Response) -> Any:
        assert response.status_code < 400, f"{response.request.method} {response.request.url}: " \
                                           f"{response.status_code} {response.text[:500]}"
        return response.json()

    def submit(self, pr_url: str) -> dict[str, Any]:
        return dict(self._ok(self.http.post("/v1/reviews", json={"pr_url": pr_url})))

    def submit_batch(self, pr_urls: list[str]) -> list[str]:
        body = self._ok(self.http.post("/v1/batches", json={"pr_urls": pr_urls}))
        return [r["id"] for r in body["reviews"]]

    def get(self, review_id: str) -> dict[str, Any]:
        return dict(self._ok(self.http.get(f"/v1/reviews/{review_id}")))

    def wait_terminal(self, ids: Iterable[str], timeout_s: float) -> dict[str, dict[str, Any]]:
        """Every review's resource once all are finished; tolerates a moment without an answer
        (the ingress or its node may be the thing that was lost)."""
        pending, done = set(ids), {}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for review_id in sorted(pending):
                try:
                    response = self.http.get(f"/v1/reviews/{review_id}")
                except httpx.HTTPError:
                    break
                if response.status_code == 200 and response.json()["status"] in TERMINAL:
                    done[review_id] = response.json()
                    pending.discard(review_id)
            time.sleep(0.5)
        assert not pending, f"{len(pending)} review(s) unfinished after {timeout_s:.0f} s: {sorted(pending)}"
        return done


def new_api_key() -> str:
    return secrets.token_urlsafe(24)


# --- what the database and the LLM say about a run -----------------------------------------------------
def terminal_events(database_url: str, ids: Iterable[str]) -> dict[str, int]:
    """Terminal events per job id (exactly one each when nothing finished twice)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT job_id::text, count(*) FROM events WHERE job_id = ANY(%s::uuid[])"
                            " AND kind IN ('succeeded', 'failed', 'cancelled') GROUP BY job_id",
                            (list(ids),)).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def started_events(database_url: str, ids: Iterable[str]) -> list[tuple[str, int, float]]:
    """(job id, attempt, epoch seconds) of every start of the given jobs."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT job_id::text, (data->>'attempt')::int, extract(epoch FROM created_at)"
                            " FROM events WHERE job_id = ANY(%s::uuid[]) AND kind = 'started' ORDER BY id",
                            (list(ids),)).fetchall()
    return [(str(r[0]), int(r[1]), float(r[2])) for r in rows]


_PR = re.compile(r"pull request (\S+#\d+)")
_FILE = re.compile(r"svc/handler_\d+_\d+\.py")
CallKey = tuple[str, str, frozenset[str]]


def call_key(call: LLMCall) -> CallKey:
    """What an LLM call is for: its kind (a group review or the summary), its PR (both prompts say
    "pull request owner/repo#N") and the PR files it names (a group). The same key twice means the
    same piece of work was paid for twice."""
    pr = _PR.search(call.text)
    return schema_name(call), pr.group(1) if pr else "", frozenset(_FILE.findall(call.text))


def repeated_completed(calls: list[LLMCall]) -> dict[CallKey, int]:
    """Work whose call completed more than once (finished LLM steps repeated)."""
    counts = Counter(call_key(c) for c in calls if c.outcome == "completed")
    return {k: n for k, n in counts.items() if n > 1}


def waste(calls: list[LLMCall]) -> tuple[int, int]:
    """(calls made, calls a run without faults needs: one per distinct piece of work)."""
    return len(calls), len({call_key(c) for c in calls})


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, psycopg.OperationalError):
            value = None
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
