"""Samples a running pr-review once a second: the job queue, the agent pool, and CPU use.

The caller must be the Ray driver of the cluster (replica counts come from `serve.status()`).
Used by `bench/autoscale.py` and by `tests/e2e/test_autoscale.py`.
"""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil
import psycopg
from psycopg.rows import dict_row

from prreview.sql import queries

APP = "reviews"
AGENT = "ReviewAgent"
# Ray names an actor's worker process after it: `ray::ServeReplica:<app>:<deployment>`.
_AGENT_PROCESS_TITLE = f"ServeReplica:{APP}:{AGENT}"
_LIVE_STATES = {"STARTING", "UPDATING", "RECOVERING", "RUNNING"}


@dataclass(frozen=True)
class Sample:
    t_s: float  # seconds since the recorder started
    pending: int  # jobs queued (waiting for, or handed to, an agent that has not started them)
    running: int  # jobs an agent is running
    done: int  # jobs in a terminal status
    replicas: int  # agent replicas RUNNING (serving requests)
    replicas_target: int  # agent replicas wanted by the autoscaler: running + starting
    agent_cpu_pct: float  # all agent replica processes together, % of one core
    cluster_cpu_pct: float  # every process of the local Ray cluster (agents included), % of one core
    machine_cpu_pct: float  # the whole machine (shared with anything else running), % of all its cores


def agent_replicas() -> tuple[int, int]:
    """(running, live) replicas of the agent deployment; live counts those still starting."""
    from ray import serve

    app = serve.status().applications.get(APP)
    deployment = app.deployments.get(AGENT) if app else None
    if deployment is None:
        return 0, 0
    states = {str(getattr(state, "value", state)): n for state, n in deployment.replica_states.items()}
    return states.get("RUNNING", 0), sum(n for state, n in states.items() if state in _LIVE_STATES)


class _CpuMeter:
    """CPU use since the previous reading of this process's descendants: the local Ray cluster
    (GCS, raylet, dashboard, Serve's controller, proxy and replicas). The driver itself, which
    also hosts the fake GitHub and the scripted LLM, is left out."""

    def __init__(self) -> None:
        self._driver = psutil.Process()
        self._known: dict[int, psutil.Process] = {}
        for proc in self._driver.children(recursive=True):
            self._known[proc.pid] = proc
            proc.cpu_percent(None)  # starts its clock
        psutil.cpu_percent(None)

    def _percent(self, proc: psutil.Process) -> float:
        known = self._known.get(proc.pid)
        if known is not None:
            return known.cpu_percent(None)
        # Born since the last reading: its whole life so far (a replica's start-up counts).
        proc.cpu_percent(None)
        times = proc.cpu_times()
        return 100.0 * (times.user + times.system) / max(time.time() - proc.create_time(), 0.1)

    def read(self) -> tuple[float, float, float]:
        """(agent replicas, whole cluster, machine): the first two in % of one core."""
        agents = cluster = 0.0
        alive: dict[int, psutil.Process] = {}
        for proc in self._driver.children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
                percent = self._percent(proc)
            except psutil.Error:  # exited between the listing and the reading
                continue
            alive[proc.pid] = self._known.get(proc.pid, proc)
            cluster += percent
            if _AGENT_PROCESS_TITLE in title:
                agents += percent
        self._known = alive
        return agents, cluster, psutil.cpu_percent(None)


class TimelineRecorder:
    """Records one `Sample` every `interval_s` in a background thread, until closed."""

    def __init__(self, database_url: str, interval_s: float = 1.0) -> None:
        self.database_url = database_url
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def start(self) -> None:
        self._stop.clear()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def elapsed_s(self) -> float:
        """Now, on the samples' clock."""
        return time.monotonic() - self._started

    @property
    def latest(self) -> Sample | None:
        with self._lock:
            return self.samples[-1] if self.samples else None

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def _run(self) -> None:
        meter = _CpuMeter()
        with psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row) as conn:
            while not self._stop.is_set():
                tick = time.monotonic()
                try:
                    sample = self._sample(conn, meter, tick - self._started)
                except Exception as exc:  # one failed reading (a busy controller) must not end the record
                    self.errors.append(f"{tick - self._started:.1f}s: {type(exc).__name__}: {exc}")
                else:
                    with self._lock:
                        self.samples.append(sample)
                self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - tick)))

    @staticmethod
    def _sample(conn: psycopg.Connection[dict[str, int]], meter: _CpuMeter, t_s: float) -> Sample:
        row = conn.execute(queries()["queue_stats"]).fetchone()
        assert row is not None
        running_replicas, live_replicas = agent_replicas()
        agent_cpu, cluster_cpu, machine_cpu = meter.read()
        return Sample(t_s=round(t_s, 1), pending=row["queued"], running=row["running"],
                      done=row["succeeded"] + row["failed"] + row["cancelled"], replicas=running_replicas,
                      replicas_target=live_replicas, agent_cpu_pct=round(agent_cpu, 1),
                      cluster_cpu_pct=round(cluster_cpu, 1), machine_cpu_pct=round(machine_cpu, 1))


def write_csv(samples: list[Sample], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([f.name for f in fields(Sample)])
        writer.writerows(astuple(s) for s in samples)


def markdown_table(samples: list[Sample], every_s: float = 5.0) -> str:
    """One row per `every_s` seconds (the first sample at or after each step), plus the last one."""
    header = ("| t (s) | pending | running | done | replicas | wanted | agents CPU | cluster CPU "
              "| machine CPU |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows, next_t = [], 0.0
    for i, s in enumerate(samples):
        if s.t_s >= next_t or i == len(samples) - 1:
            rows.append(f"| {s.t_s:.0f} | {s.pending} | {s.running} | {s.done} | {s.replicas} "
                        f"| {s.replicas_target} | {s.agent_cpu_pct:.0f}% | {s.cluster_cpu_pct:.0f}% "
                        f"| {s.machine_cpu_pct:.0f}% |")
            next_t = s.t_s - s.t_s % every_s + every_s
    return "\n".join([header, *rows])


def plot(samples: list[Sample], path: Path, *, title: str, max_replicas: int,
         spike_t: float | None = None, agent_num_cpus: float | None = None) -> None:
    """Three panels sharing the time axis: jobs, agent replicas, CPU use. `agent_num_cpus` (the
    CPUs each replica reserves) adds the pool's reservation, what a CPU autoscaler divides by."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s for s in samples]
    fig, (jobs, pool, cpu) = plt.subplots(3, 1, sharex=True, figsize=(9, 7.5),
                                          gridspec_kw={"height_ratios": [3, 2, 2]})
    jobs.plot(t, [s.pending for s in samples], label="pending (queued)", color="tab:orange")
    jobs.plot(t, [s.running for s in samples], label="running", color="tab:blue")
    jobs.set_ylabel("reviews")
    jobs.legend(loc="upper right")
    jobs.set_title(title)

    pool.step(t, [s.replicas_target for s in samples], where="post", label="wanted (running + starting)",
              color="tab:gray", linestyle="--")
    pool.step(t, [s.replicas for s in samples], where="post", label="running", color="tab:green")
    pool.set_ylabel("agent replicas")
    pool.set_ylim(0, max_replicas + 0.8)
    pool.set_yticks(range(0, max_replicas + 1))
    pool.legend(loc="upper right")

    cpu.plot(t, [s.cluster_cpu_pct for s in samples], label="whole Ray cluster", color="tab:purple",
             alpha=0.5)
    cpu.plot(t, [s.agent_cpu_pct for s in samples], label="agent replicas", color="tab:red")
    if agent_num_cpus is not None:
        cpu.step(t, [100 * agent_num_cpus * s.replicas for s in samples], where="post", color="tab:red",
                 linestyle="--", alpha=0.6, label=f"agents' reservation ({agent_num_cpus:g} CPU each)")
    cpu.set_ylabel("CPU, % of one core")
    cpu.set_ylim(0, max(100.0, *(s.cluster_cpu_pct * 1.1 for s in samples)))
    cpu.set_xlabel("seconds")
    cpu.legend(loc="upper right")
    for axis in (jobs, pool, cpu):
        axis.grid(alpha=0.3)
        if spike_t is not None:
            axis.axvline(spike_t, color="black", linewidth=0.8, linestyle=":")
    if spike_t is not None:
        jobs.annotate("spike", (spike_t, 0), xytext=(4, 4), textcoords="offset points")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
