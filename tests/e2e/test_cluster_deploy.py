"""The production path, as an operator (or a KubeRay RayService) runs it: `ray start --head`, a
second node joined, `serve deploy serve_config.yaml` with DATABASE_URL pointing at a new, empty
database and LLM_BASE_URL at an external OpenAI-compatible endpoint. Then a node is lost mid-batch.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from serve_app.local import free_port
from tests.conftest import with_db
from tests.deployed import (
    DeployedService,
    new_api_key,
    operator_config,
    repeated_completed,
    service_settings,
    started_events,
    terminal_events,
    wait_until,
    waste,
)
from tests.fakes import FakeGitHub, ScriptedLLM
from tests.helpers import add_pr
from tests.ray_cluster import RayCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900), pytest.mark.usefixtures("without_stack")]

# Each node as big as a small pod: the head runs Serve's controller and proxy plus what lands on it,
# the worker the rest. Logical CPUs: the deployments ask for fractions of one.
HEAD_CPUS, WORKER_CPUS = 4, 4


@pytest.fixture
def empty_database(pg_admin_url: str) -> Iterator[str]:
    """A new database with nothing in it (CREATE DATABASE, no migrated template): the service
    has to create its own schema."""
    name = f"empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = with_db(pg_admin_url, name)
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_serve_deploy_on_a_two_node_cluster_with_an_empty_database_survives_losing_a_node(
        empty_database: str, tmp_path) -> None:
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT to_regclass('jobs') IS NULL").fetchone() == (True,)
    with FakeGitHub() as github, ScriptedLLM() as llm:
        http_port, api_key = free_port(), new_api_key()
        env = service_settings(database_url=empty_database, llm_base_url=llm.base_url, github_api_url=github.url,
                               home=str(tmp_path / "home"), api_key=api_key)
        cluster = RayCluster(env=env, head_cpus=HEAD_CPUS)
        service = DeployedService(cluster, http_port, api_key)
        try:
            cluster.start_head()
            worker = cluster.add_node(WORKER_CPUS)
            # min_replicas 2 instead of 1: the test needs an agent replica on each node from the start, so
            # that losing one node hits running reviews and leaves a replica to take them over. Serve
            # places replicas with Ray's SPREAD strategy by default (RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY
            # and the deprecated ..._COMPACT_... are off in Ray 2.60), so two replicas land on two nodes;
            # the assertion below checks it rather than trusting it.
            service.deploy(operator_config(http_port, agent_min_replicas=2))
            # The service migrated the empty database itself.
            with psycopg.connect(empty_database) as conn:
                assert conn.execute("SELECT max(version) FROM pr_review_migrations").fetchone()[0] >= 3

            first = service.submit(add_pr(github, files=1))
            done = service.wait_terminal([first["id"]], timeout_s=120)[first["id"]]
            assert done["status"] == "succeeded", done["error"]
            assert done["review"]["findings"]

            agents = wait_until(lambda: _agents_on_two_nodes(cluster), 120, "an agent replica on each node")
            worker_node = cluster.node_ids(head=False)
            assert len(worker_node) == 1
            worker_replicas = {r["replica_id"] for r in agents if r["node_id"] in worker_node}
            assert worker_replicas

            # A batch on a slow model, then the worker node's whole process group is SIGKILLed.
            llm.reset()
            llm.latency_s = 2.0
            urls = [add_pr(github, files=2) for _ in range(8)]
            ids = service.submit_batch(urls)

            def on_worker_and_paid() -> list[str]:
                """Reviews running on the worker node, once at least one LLM call has completed there."""
                with psycopg.connect(empty_database) as conn:
                    rows = conn.execute("SELECT id::text, lease_owner, (usage->>'llm_calls')::int FROM jobs"
                                        " WHERE status = 'running'").fetchall()
                there = [(job, calls) for job, owner, calls in rows
                         if owner and owner.split(":", 1)[0] in worker_replicas]
                return [job for job, _ in there] if llm.completed >= 2 and there else []

            hit = wait_until(on_worker_and_paid, 120, "reviews running on the worker node", interval_s=0.1)
            lost = _replicas_on(cluster, worker_node)  # what the node takes with it, for the figures
            calls_before_kill = len(llm.requests)
            killed_at = time.time()
            worker.kill()
            wait_until(lambda: len(cluster.alive_nodes()) == 1, 60, "Ray to notice the lost node")
            node_gone_s = time.time() - killed_at

            results = service.wait_terminal(ids, timeout_s=300)
        finally:
            llm.latency_s = 0.0
            service.close()
            cluster.stop()

        statuses = Counter(r["status"] for r in results.values())
        assert statuses == {"succeeded": len(ids)}, {i: r["error"] for i, r in results.items()}
        attempts = Counter(r["attempts"] for r in results.values())
        assert max(attempts) <= 2, attempts
        # The reviews that were running on the lost node went through a second attempt.
        assert all(results[job]["attempts"] == 2 for job in hit), {j: results[j]["attempts"] for j in hit}
        assert terminal_events(empty_database, ids) == dict.fromkeys(ids, 1)
        # Finished LLM steps are not repeated: no piece of work (a job's group, its summary) has two
        # completed calls. A call cut off by the loss (aborted, or completed on a dead node and never
        # checkpointed) is the only waste.
        calls = llm.requests
        assert not repeated_completed(calls), repeated_completed(calls)

        restarts = [at for job, attempt, at in started_events(empty_database, ids) if attempt == 2]
        resume = sorted(at - killed_at for at in restarts)
        made, needed = waste(calls)
        print(f"\nnode loss: {len(hit)} review(s) running on the lost node, {len(ids)} in the batch; replicas lost "
              f"with it: {lost}; "
              f"Ray saw the node gone after {node_gone_s:.1f} s; attempts {dict(sorted(attempts.items()))}; "
              f"resume after the kill (s): {[round(s, 1) for s in resume]}; LLM calls {made} for {needed} pieces "
              f"of work ({made - needed} wasted; {calls_before_kill} made before the kill)")


def _replicas_on(cluster: RayCluster, nodes: list[str]) -> dict[str, int]:
    """Running replicas per deployment on `nodes`."""
    deployments = cluster.serve_details()["applications"]["reviews"]["deployments"]
    return {name: n for name, d in deployments.items()
            if (n := sum(r["state"] == "RUNNING" and r["node_id"] in nodes for r in d["replicas"]))}


def _agents_on_two_nodes(cluster: RayCluster) -> list[dict[str, object]]:
    replicas = cluster.replicas("reviews", "ReviewAgent")
    return replicas if len({r["node_id"] for r in replicas}) >= 2 else []
