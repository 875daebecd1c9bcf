"""A database failover, survived: every connection dropped and new ones refused for 20 s while a
batch runs, then the database is back. Done two ways: (a) a TCP proxy in front of PostgreSQL that
the test cuts, as a managed database's failover looks from the clients; (b) a restart of the
embedded server (`pr-review serve`'s default), which keeps its URL (a Unix socket in its data dir).

Meanwhile the API answers what it can: the contract's JSON `503` with `Retry-After` for anything
that needs the database, within seconds, never a plain-text 500 or a hang; `/healthz` stays 200.
Afterwards `/readyz` is 200 within 30 s and every review ends `succeeded`, exactly once.
The service runs as in production (tests/deployed.py): `ray start --head`, `serve deploy`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from prreview.config import Settings
from prreview.db import start_embedded_postgres, stop_embedded_postgres
from serve_app.local import free_port
from tests.conftest import with_db
from tests.deployed import (
    DeployedService,
    new_api_key,
    operator_config,
    repeated_completed,
    service_settings,
    terminal_events,
    wait_until,
    waste,
)
from tests.fakes import FakeGitHub, ScriptedLLM
from tests.fakes.tcp_proxy import TcpProxy
from tests.helpers import add_pr
from tests.ray_cluster import RayCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900), pytest.mark.usefixtures("without_stack")]

OUTAGE_S = 20.0
ANSWER_WITHIN_S = 10.0  # every answer during the outage comes within this
READY_WITHIN_S = 30.0  # /readyz is 200 again within this after the database is back
BATCH = 7


@dataclass
class Answer:
    probe: str
    status: int | None  # None: no answer (connection error or timeout)
    elapsed_s: float
    retry_after: str | None = None
    error_code: str | None = None
    problem: str | None = None  # why this answer breaks the contract, if it does


@dataclass
class OutageReport:
    answers: list[Answer] = field(default_factory=list)
    ready_after_s: float = 0.0
    attempts: Counter[int] = field(default_factory=Counter)
    calls_made: int = 0
    calls_needed: int = 0
    aborted_or_failed: int = 0
    repeated: int = 0  # completed calls whose work was done again (the outage cut them off before a checkpoint)

    def print(self, name: str) -> None:
        by_probe: dict[str, Counter[str]] = {}
        for a in self.answers:
            by_probe.setdefault(a.probe, Counter())[str(a.status or "no answer")] += 1
        slowest = max((a.elapsed_s for a in self.answers), default=0.0)
        print(f"\n{name}: answers during the {OUTAGE_S:.0f} s outage by status: "
              f"{dict(Counter(str(a.status or 'no answer') for a in self.answers))} "
              f"({ {p: dict(c) for p, c in sorted(by_probe.items())} }), slowest {slowest:.1f} s; "
              f"/readyz 200 {self.ready_after_s:.1f} s after the database returned; "
              f"attempts {dict(sorted(self.attempts.items()))}; LLM calls {self.calls_made} for {self.calls_needed} "
              f"pieces of work ({self.calls_made - self.calls_needed} wasted: {self.aborted_or_failed} aborted "
              f"or failed, {self.repeated} completed then repeated)")


def _judge(probe: str, response: httpx.Response, elapsed: float) -> Answer:
    answer = Answer(probe, response.status_code, elapsed, response.headers.get("retry-after"))
    if probe == "healthz":  # served without the database
        answer.problem = None if response.status_code == 200 else f"healthz answered {response.status_code}"
        return answer
    try:
        body = response.json()
        answer.error_code = body["error"]["code"]
        assert isinstance(body["error"]["message"], str)
    except (ValueError, KeyError, TypeError, AssertionError):
        answer.problem = f"not the contract's JSON error: {response.status_code} {response.text[:200]!r}"
        return answer
    if response.status_code != 503 or not answer.retry_after:
        answer.problem = f"{response.status_code} {answer.error_code} (Retry-After {answer.retry_after})"
    elif elapsed > ANSWER_WITHIN_S:
        answer.problem = f"answered after {elapsed:.1f} s"
    return answer


def _probe_while(service: DeployedService, github: FakeGitHub, review_id: str, stop: threading.Event,
                 answers: list[Answer]) -> list[threading.Thread]:
    """One thread per kind of request, each asking again and again until `stop`."""
    probes: dict[str, Callable[[httpx.Client], httpx.Response]] = {
        "get_review": lambda c: c.get(f"/v1/reviews/{review_id}"),
        "list_reviews": lambda c: c.get("/v1/reviews", params={"limit": 5}),
        "post_review": lambda c: c.post("/v1/reviews", json={"pr_url": add_pr(github)}),
        "readyz": lambda c: c.get("/readyz"),
        "healthz": lambda c: c.get("/healthz"),
    }
    lock = threading.Lock()

    def loop(name: str, ask: Callable[[httpx.Client], httpx.Response]) -> None:
        # A generous client timeout: a hang shows up as an answer slower than ANSWER_WITHIN_S.
        with httpx.Client(base_url=service.url, timeout=ANSWER_WITHIN_S + 20,
                          headers=dict(service.http.headers)) as client:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    answer = _judge(name, ask(client), time.monotonic() - start)
                except httpx.HTTPError as exc:
                    answer = Answer(name, None, time.monotonic() - start, problem=f"{type(exc).__name__}: {exc}")
                with lock:
                    answers.append(answer)
                stop.wait(0.5)

    threads = [threading.Thread(target=loop, args=item, daemon=True) for item in probes.items()]
    for thread in threads:
        thread.start()
    return threads


def run_outage(service: DeployedService, database_url: str, github: FakeGitHub, llm: ScriptedLLM,
               cut: Callable[[], None], restore: Callable[[], None]) -> OutageReport:
    """A batch on a slow model; the database cut for OUTAGE_S while the API is probed; then back."""
    report = OutageReport()
    llm.reset()
    llm.latency_s = 2.0
    ids = service.submit_batch([add_pr(github, files=2) for _ in range(BATCH)])

    def running_and_paid() -> bool:
        with psycopg.connect(database_url) as conn:
            running = conn.execute("SELECT count(*) FROM jobs WHERE status = 'running'").fetchone()
        return bool(running and running[0] >= 3 and llm.completed >= 2)

    wait_until(running_and_paid, 120, "the batch to be running", interval_s=0.2)
    stop = threading.Event()
    cut()
    cut_at = time.monotonic()
    threads = _probe_while(service, github, ids[0], stop, report.answers)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
    stop.set()
    for thread in threads:
        thread.join(ANSWER_WITHIN_S + 25)
    restore()
    report.ready_after_s = service.wait_ready(120)

    results = service.wait_terminal(ids, timeout_s=300)
    llm.latency_s = 0.0
    report.attempts = Counter(r["attempts"] for r in results.values())
    calls = llm.requests
    report.calls_made, report.calls_needed = waste(calls)
    report.aborted_or_failed = sum(c.outcome in ("aborted", "failed") for c in calls)

    problems = [a for a in report.answers if a.problem]
    assert not problems, problems[:10]
    assert {a.probe for a in report.answers} >= {"get_review", "list_reviews", "post_review", "readyz", "healthz"}
    assert report.ready_after_s <= READY_WITHIN_S, report.ready_after_s
    assert Counter(r["status"] for r in results.values()) == {"succeeded": len(ids)}, \
        {i: r["error"] for i, r in results.items() if r["status"] != "succeeded"}
    assert max(report.attempts) <= 2, report.attempts
    assert terminal_events(database_url, ids) == dict.fromkeys(ids, 1)
    report.repeated = sum(n - 1 for n in repeated_completed(calls).values())
    return report


@contextlib.contextmanager
def deployed_service(database_url: str, github: FakeGitHub, llm: ScriptedLLM, home: Path) -> Iterator[DeployedService]:
    """The service on a one-node cluster, deployed from serve_config.yaml (only the port changed)."""
    http_port, api_key = free_port(), new_api_key()
    env = service_settings(database_url=database_url, llm_base_url=llm.base_url, github_api_url=github.url,
                           home=str(home), api_key=api_key)
    cluster = RayCluster(env=env)
    service = DeployedService(cluster, http_port, api_key)
    try:
        cluster.start_head()
        service.deploy(operator_config(http_port))
        yield service
    finally:
        llm.latency_s = 0.0
        service.close()
        cluster.stop()


@pytest.fixture
def empty_database(pg_admin_url: str) -> Iterator[str]:
    name = f"failover_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield with_db(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_connections_cut_and_refused_for_20_s_at_a_proxy(empty_database: str, tmp_path: Path) -> None:
    # The test server may be the embedded one, reached by a Unix socket: the proxy speaks TCP to the
    # service either way.
    info = psycopg.conninfo.conninfo_to_dict(empty_database)
    upstream = (str(info.get("host") or "/var/run/postgresql"), int(info.get("port") or 5432))
    with TcpProxy(*upstream) as proxy, FakeGitHub() as github, ScriptedLLM() as llm:
        database_url = proxy.url_for(empty_database)
        with deployed_service(database_url, github, llm, tmp_path / "home") as service:
            report = run_outage(service, empty_database, github, llm, cut=lambda: _cut(proxy), restore=proxy.restore)
    report.print("proxy cut")


def _cut(proxy: TcpProxy) -> None:
    dropped = proxy.cut()
    assert dropped > 0, "the service held no connection to drop"


def test_embedded_server_restarted_after_20_s(tmp_path: Path) -> None:
    # A short data dir: the server's Unix socket lives in it, and socket paths are limited to ~100 bytes.
    home = Path(tempfile.mkdtemp(prefix="pf", dir="/tmp"))
    settings = Settings(home=home)
    database_url = start_embedded_postgres(settings)
    try:
        with FakeGitHub() as github, ScriptedLLM() as llm, \
                deployed_service(database_url, github, llm, tmp_path / "home") as service:
            report = run_outage(service, database_url, github, llm, cut=lambda: stop_embedded_postgres(settings),
                                restore=lambda: _restart(settings, database_url))
    finally:
        stop_embedded_postgres(settings)
        shutil.rmtree(home, ignore_errors=True)
    report.print("embedded server restart")


def _restart(settings: Settings, database_url: str) -> None:
    assert start_embedded_postgres(settings) == database_url  # the same URL: clients simply reconnect
