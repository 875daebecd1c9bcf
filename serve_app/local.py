"""`pr-review serve` on one machine: the database, a local Ray cluster, and serve_config.yaml
deployed exactly as `serve deploy` deploys it (the service then migrates its own schema)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from prreview import db_watchdog
from prreview.access import ensure_local_key
from prreview.config import Settings
from prreview.db import migrate, open_pool, start_embedded_postgres, stop_embedded_postgres
from prreview.store import Statements
from serve_app.serve_config import DEFAULT_PATH, Overrides, deploy, load_config, local_config

log = logging.getLogger(__name__)

# Agents mostly wait on the LLM: give Ray more logical CPUs than cores so replicas get placed.
LOCAL_LOGICAL_CPUS = 16

# Ray Serve's HAProxy mode: HAProxy in front of the ingress replicas, which serve HTTP themselves,
# instead of Serve's Python proxy actor: with reviews running, 1.3 to 2x a bare uvicorn's cost per
# submit instead of 5x (bench/submit_latency.py). Every Ray process reads the switch when it starts, so it is in
# the environment of `ray start` (a cluster sets it on every node; `pr-review serve` while it starts
# Ray). An operator's own `RAY_SERVE_ENABLE_HA_PROXY=0` turns it off.
HAPROXY_SWITCH = "RAY_SERVE_ENABLE_HA_PROXY"


# Ingress replicas listen on ports from a range per instance (Serve's default, 30000-31000, is
# one per machine: a second instance's HAProxy would reach the first one's replicas). Below
# `free_port`'s range, which is below the kernel's ephemeral ports.
_REPLICA_PORT_SLOTS, _REPLICA_PORTS_PER_SLOT = 400, 25


def serve_env(run_dir: Path) -> dict[str, str]:
    """HAProxy's settings for one instance: files and ports of its own (instances may run side by
    side on one machine), and no 30 s hold of a stopping ingress replica for an external balancer."""
    slot = secrets.randbelow(_REPLICA_PORT_SLOTS) * _REPLICA_PORTS_PER_SLOT
    return {HAPROXY_SWITCH: "1", "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(run_dir / "haproxy.cfg"),
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(20000 + slot),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(20000 + slot + _REPLICA_PORTS_PER_SLOT),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(10000 + slot),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(10000 + slot + _REPLICA_PORTS_PER_SLOT),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(run_dir / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(run_dir),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(run_dir / "server-state"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}


@contextmanager
def serve_env_while_ray_starts(run_dir: Path) -> Iterator[None]:
    """`serve_env` in this process's environment while Ray starts (its processes inherit it), then
    the environment as it was: a process started from here later (another `pr-review serve`, a
    test's subprocess) must not take this instance's ports. An operator's own values win."""
    added = {} if os.environ.get(HAPROXY_SWITCH, "1") != "1" else \
        {k: v for k, v in serve_env(run_dir).items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


# Where `free_port` picks: above the replicas' ports, below the kernel's ephemeral ones.
_FREE_PORTS_FROM = 20_000 + _REPLICA_PORT_SLOTS * _REPLICA_PORTS_PER_SLOT + 1


def free_port() -> int:
    """A TCP port free on every address right now (tests and benchmarks run stacks side by side).
    Not one the kernel would hand out itself: every outgoing connection (Ray's hundreds, the
    database pools') takes an ephemeral port, and one of them taking ours before its server binds
    it made HAProxy or a replica fail to start now and then."""
    span = _ephemeral_ports()[0] - _FREE_PORTS_FROM
    for _ in range(200 if span >= 100 else 0):
        port = _FREE_PORTS_FROM + secrets.randbelow(span)
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # an unusual port range: the kernel's pick it is
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


@dataclass
class LocalStack:
    """Starts and stops the local cluster; the CLI's `serve` and `demo` and the e2e tests use it.

    `overrides` change deployment options of serve_config.yaml (tests shrink bounds with it)."""

    settings: Settings
    config_path: Path = DEFAULT_PATH
    with_llm_app: bool = True
    overrides: Overrides = field(default_factory=dict)
    embedded_db: bool = False
    run_dir: Path | None = None  # HAProxy's files of this instance
    key_file: Path | None = None  # the local API key, when no operator key is configured

    def start(self, *, wait_ready_s: float | None = None) -> None:
        """Start everything; readiness waits longer when vLLM has to load a model."""
        import ray

        self.embedded_db = not self.settings.database_url
        if self.embedded_db:
            db_watchdog.wait_for_previous(self.settings)
            url = start_embedded_postgres(self.settings)
            db_watchdog.start(self.settings, os.getpid())
            self.settings = self.settings.model_copy(update={"database_url": url})
        # Ray's workers inherit this process's environment: the replicas read their settings from it.
        os.environ["DATABASE_URL"] = str(self.settings.database_url)
        self.run_dir = Path(tempfile.mkdtemp(prefix="pr-review-serve-"))
        if not self.settings.api_keys:
            self.key_file = make_local_key(self.settings)
        with serve_env_while_ray_starts(self.run_dir):
            # "local": a cluster of its own, never one that `ray start` or RAY_ADDRESS points at.
            ray.init("local", num_cpus=LOCAL_LOGICAL_CPUS, include_dashboard=True, dashboard_host="127.0.0.1",
                     dashboard_port=self.settings.dashboard_port, namespace="pr-review",
                     _metrics_export_port=self.settings.metrics_export_port,
                     logging_level=logging.WARNING, log_to_driver=False)
        self.deploy()
        self.wait_ready(wait_ready_s or (900.0 if self.serves_llm else 180.0))

    @property
    def serves_llm(self) -> bool:
        return self.with_llm_app and not self.settings.llm_base_url

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.dashboard_port}"

    def deploy(self, overrides: Overrides | None = None) -> None:
        """(Re)deploy serve_config.yaml, as `serve deploy` would; a changed deployment is rolled
        out by Serve (the rolling-update test uses this)."""
        config = local_config(load_config(self.config_path), host="127.0.0.1", port=self.settings.http_port,
                              with_llm_app=self.serves_llm, overrides={**self.overrides, **(overrides or {})})
        deploy(self.dashboard_url, config)

    def wait_ready(self, timeout_s: float) -> None:
        """Until /readyz answers, and the model's own route when it is served here: HAProxy routes
        `/llm` only once the model's replica runs (before, `/llm/...` reaches the review app)."""
        deadline = time.monotonic() + timeout_s
        last = ""
        probes = ["/readyz", *(["/llm/v1/models"] if self.serves_llm else [])]
        while time.monotonic() < deadline:
            try:
                responses = [httpx.get(f"{self.settings.api_url}{path}", timeout=15) for path in probes]
                if all(r.status_code == 200 for r in responses):
                    return
                last = next(r.text for r in responses if r.status_code != 200)
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise RuntimeError(f"pr-review did not become ready within {timeout_s:.0f} s: {last}")

    def stop(self) -> None:
        import ray
        from ray import serve

        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()  # also after an interrupted ray.init, whose helper processes would linger
            if self.embedded_db:
                stop_embedded_postgres(self.settings)
            if self.run_dir is not None:
                shutil.rmtree(self.run_dir, ignore_errors=True)


def make_local_key(settings: Settings) -> Path:
    """The admin key `pr-review serve` keeps under PR_REVIEW_HOME when no operator key is
    configured (the CLI and `pr-review demo` read it from there)."""
    url = str(settings.database_url)
    migrate(url)  # the replicas migrate too; the key table must exist before they start

    async def ensure() -> Path:
        pool = await open_pool(url, max_size=1)
        try:
            return await ensure_local_key(settings, Statements(pool))
        finally:
            await pool.close()

    # Its own thread: the caller may be inside an event loop (a notebook, an async test).
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, ensure()).result()


def replica_pids(deployment: str) -> list[int]:
    """PIDs of the live replicas of `deployment` in this driver's Ray cluster (tests, benchmarks)."""
    import ray
    from ray.util.state import list_actors

    # Name our own cluster: other Ray clusters may run on the same machine.
    actors = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")],
                         limit=1000)
    return [a.pid for a in actors if f":{deployment}" in (a.class_name or "") and a.pid]
