"""`pr-review serve` on one machine: the database, a local Ray cluster, and the Serve apps."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from prreview import db_watchdog
from prreview.config import Settings
from prreview.db import migrate, resolve_database_url, stop_embedded_postgres
from prreview.sql import queries
from serve_app.serve_config import DEFAULT_PATH, load_apps

log = logging.getLogger(__name__)

# Agents mostly wait on the LLM: give Ray more logical CPUs than cores so replicas get placed.
LOCAL_LOGICAL_CPUS = 16


def free_port() -> int:
    """A TCP port free on loopback right now (tests and benchmarks run stacks side by side)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def setup_database(settings: Settings) -> str:
    """Resolve the database (starting the embedded one if needed), migrate it, and make every
    process started from here on (Ray workers included) see it as DATABASE_URL."""
    url = resolve_database_url(settings)
    os.environ["DATABASE_URL"] = url
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(queries()["resize_llm_slots"], {"slots": settings.llm_global_concurrency})
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
    return url


@dataclass
class LocalStack:
    """Starts and stops the local cluster; the CLI's `serve` and `demo` and the e2e tests use it."""

    settings: Settings
    config_path: Path = DEFAULT_PATH
    with_llm_app: bool = True
    started: list[str] = field(default_factory=list)
    embedded_db: bool = False

    def start(self, *, wait_ready_s: float | None = None) -> None:
        """Start everything; readiness waits longer when vLLM has to load a model."""
        import ray
        from ray import serve

        self.embedded_db = not self.settings.database_url
        if self.embedded_db:
            db_watchdog.wait_for_previous(self.settings)
        setup_database(self.settings)
        if self.embedded_db:
            db_watchdog.start(self.settings, os.getpid())
        self.settings = self.settings.model_copy(update={"database_url": os.environ["DATABASE_URL"]})
        ray.init(num_cpus=LOCAL_LOGICAL_CPUS, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=self.settings.dashboard_port, namespace="pr-review",
                 _metrics_export_port=self.settings.metrics_export_port,
                 logging_level=logging.WARNING, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": self.settings.http_port})
        apps = load_apps(self.config_path)
        if self.with_llm_app and not self.settings.llm_base_url:
            llm = apps["llm"]
            serve.run(llm.builder()(llm.args), name=llm.name, route_prefix=llm.route_prefix, blocking=False)
            self.started.append(llm.name)
        reviews = apps["reviews"]
        serve.run(reviews.builder()(reviews.args, reviews.deployments), name=reviews.name,
                  route_prefix=reviews.route_prefix, blocking=False)
        self.started.append(reviews.name)
        self.wait_ready(wait_ready_s or (900.0 if "llm" in self.started else 180.0))

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.dashboard_port}"

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.settings.api_url}/readyz", timeout=15)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"pr-review did not become ready within {timeout_s:.0f} s: {last}")

    def stop(self) -> None:
        import ray
        from ray import serve

        try:
            if ray.is_initialized():
                try:
                    serve.shutdown()
                finally:
                    ray.shutdown()
        finally:
            if self.embedded_db:
                stop_embedded_postgres(self.settings)


def replica_pids(deployment: str) -> list[int]:
    """PIDs of the live replicas of `deployment` in this driver's Ray cluster (tests, benchmarks)."""
    import ray
    from ray.util.state import list_actors

    # Name our own cluster: other Ray clusters may run on the same machine.
    actors = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")],
                         limit=1000)
    return [a.pid for a in actors if f":{deployment}" in (a.class_name or "") and a.pid]
