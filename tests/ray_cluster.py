"""A Ray cluster of real `ray start` processes on this machine, driven like an operator (or KubeRay)
drives one: `ray start --head`, more nodes joined with `ray start --address ... --block`, then
`serve deploy CONFIG --address <dashboard>`. Tests use it to run the service exactly as production
does and to lose a whole node (SIGKILL of every process of that node).

Each node runs in its own session (`setsid`), so the node is exactly that session's processes: the
raylet, its workers and replicas (and, for the head, the GCS and the dashboard). Stopping the cluster
signals those sessions only, never a global `ray stop`, which would also end other Ray clusters on
the machine. The cluster's ports are its own, its temp dir too (short: Unix socket paths are limited
to about 100 bytes), so `ray.init()` elsewhere never finds it.

The test process never joins the cluster: it watches it through the dashboard's REST API
(`/api/v0/nodes`, `/api/serve/applications/`), as an operator's tools do.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from serve_app.local import free_port

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
SERVE = str(VENV_BIN / "serve")
# A node's object store; the default (30 % of RAM per node) is far too much for nodes sharing a laptop.
OBJECT_STORE_BYTES = 200 * 1024 * 1024


@dataclass
class RayNode:
    """One `ray start ... --block` process and its session (the whole node)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def session(self) -> int:
        return self.proc.pid  # started with start_new_session: the session id is its pid

    def processes(self) -> list[psutil.Process]:
        """Every live process of this node's session (workers and replicas included)."""
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
                if os.getsid(proc.pid) == self.session:
                    found.append(proc)
        return found

    def signal_all(self, sig: signal.Signals) -> list[psutil.Process]:
        procs = self.processes()
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
        return procs

    def kill(self) -> None:
        """SIGKILL every process of the node at once: the machine (or the pod) is gone."""
        procs = self.signal_all(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        """What `ray stop` does, for this node only: SIGTERM, then SIGKILL for what is left."""
        procs = self.signal_all(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=timeout_s)
        if alive or self.processes():
            self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class RayCluster:
    """A head node (`ray start --head`) and worker nodes, with the environment a pod would give them."""

    env: dict[str, str]
    head_cpus: int = 4
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rc", dir="/tmp")))
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    # --- nodes ------------------------------------------------------------------------------------
    def start_head(self, timeout_s: float = 120.0) -> RayNode:
        node = self._start("head", [
            "--head", "--port", str(self.gcs_port), "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
            "--ray-client-server-port", str(free_port()), "--num-cpus", str(self.head_cpus)])
        self._wait(lambda: len(self.alive_nodes()) >= 1, timeout_s, "the head node and its dashboard", node)
        return node

    def add_node(self, num_cpus: int, timeout_s: float = 120.0) -> RayNode:
        """A worker node joined to the head, in its own session (killing that session's processes
        removes the node)."""
        before = len(self.alive_nodes())
        node = self._start(f"worker{len(self.nodes)}", ["--address", self.address, "--num-cpus", str(num_cpus)])
        self._wait(lambda: len(self.alive_nodes()) > before, timeout_s, f"node {node.name} to join", node)
        return node

    def _start(self, name: str, args: list[str]) -> RayNode:
        log = self.temp_dir / f"{name}.out"
        common = ["--block", "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.temp_dir),
                  "--object-store-memory", str(OBJECT_STORE_BYTES),
                  # Own ports: several nodes (and other clusters) share this machine's loopback.
                  "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
                  "--disable-usage-stats"]
        proc = subprocess.Popen([RAY, "start", *args, *common], env=self.env, stdout=log.open("ab"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=self.temp_dir)
        node = RayNode(name, proc, log)
        self.nodes.append(node)
        return node

    def _wait(self, ready: Any, timeout_s: float, what: str, node: RayNode) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"`ray start` for {node.name} exited ({node.proc.returncode}): {node.tail()}")
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                if ready():
                    return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}: {node.tail()}")

    def stop(self) -> None:
        """Stop this cluster's nodes (workers first), then remove its temp dir."""
        for node in reversed(self.nodes):
            node.stop()
        self.nodes.clear()
        if not os.environ.get("PR_REVIEW_KEEP_RAY_LOGS"):
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    # --- what the dashboard says ---------------------------------------------------------------------
    def _get(self, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"} if "RAY_AUTH_TOKEN" in self.env else {}
        response = httpx.get(f"{self.dashboard_url}{path}", params=params, headers=headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def alive_nodes(self) -> list[dict[str, Any]]:
        """Alive nodes from the state API (`ray list nodes`): node_id, node_ip, is_head_node, ..."""
        data = self._get("/api/v0/nodes", limit=100)
        return [n for n in data["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def node_ids(self, *, head: bool) -> list[str]:
        """Ids of the alive head node (`head=True`) or of the alive worker nodes."""
        return [str(n["node_id"]) for n in self.alive_nodes() if bool(n["is_head_node"]) == head]

    def serve_details(self) -> dict[str, Any]:
        """`GET /api/serve/applications/`: what `serve status` shows, with every replica's node."""
        return dict(self._get("/api/serve/applications/"))

    def replicas(self, app: str, deployment: str, state: str = "RUNNING") -> list[dict[str, Any]]:
        """The replicas of one deployment (replica_id, node_id, pid, actor_name, ...) in `state`."""
        details = self.serve_details()
        deployments = (details.get("applications") or {}).get(app, {}).get("deployments", {})
        replicas = deployments.get(deployment, {}).get("replicas", [])
        return [r for r in replicas if r.get("state") == state]

    # --- serve deploy --------------------------------------------------------------------------------
    def serve_deploy(self, config: dict[str, Any], timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        """`serve deploy <config> --address <dashboard>`, the `serve` CLI of this venv, exactly as an
        operator types it (the config is written to a file first)."""
        path = self.temp_dir / "serve_config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        result = subprocess.run([SERVE, "deploy", str(path), "--address", self.dashboard_url], env=self.env,
                                capture_output=True, text=True, timeout=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"serve deploy failed ({result.returncode}): {result.stdout}\n{result.stderr}")
        return result

    def logs(self, pattern: str = "*", chars: int = 4000) -> str:
        """The tail of this cluster's Ray logs matching `pattern` (for failure messages)."""
        parts = []
        for path in sorted(self.temp_dir.glob(f"session_latest/logs/{pattern}")):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


@contextlib.contextmanager
def ray_cluster(env: dict[str, str], *, head_cpus: int = 4) -> Iterator[RayCluster]:
    """A started head node; stopped (only its own processes) on exit, whatever happened."""
    cluster = RayCluster(env=env, head_cpus=head_cpus)
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.stop()


def service_env(**values: str) -> dict[str, str]:
    """The environment of a Ray node's processes, as a pod spec would set it: this machine's basics
    (PATH, HOME) plus the service's settings. Nothing else leaks in from the test process (no
    RAY_ADDRESS, no DATABASE_URL of the test server).

    Ray's token authentication is on with a token of this cluster (KubeRay's `authOptions: token`
    sets these two variables from a Secret): explicit, so the outcome never depends on whether this
    machine's ~/.ray holds a token (Ray 2.60 turns auth on when it does). The test's own calls to
    the dashboard and `serve deploy` send the same token."""
    keep = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"}}
    return {**keep, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), **values}
