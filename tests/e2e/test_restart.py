"""SIGKILL of the whole `pr-review serve` process tree mid-batch, then a restart: nothing lost or repeated."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from serve_app.client import Client
from serve_app.local import free_port
from tests.fakes import FakeGitHub, ScriptedLLM
from tests.helpers import add_pr, schema_name, user_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600), pytest.mark.usefixtures("without_stack")]


class ServeProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "serve_app.cli", "serve"], env=self.env,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{self.env['PR_REVIEW_HTTP_PORT']}/readyz"
        wait_for(lambda: self._ready(url), timeout_s=240, interval_s=1, what="pr-review serve to be ready")

    def _ready(self, url: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"pr-review serve exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(url, timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def kill_tree(self) -> None:
        """SIGKILL the CLI and every process it started (Ray's GCS, raylet, workers, replicas)."""
        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        tree = [root, *root.children(recursive=True)]
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=30)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_tree()


def test_killing_the_whole_service_mid_batch_loses_no_job_and_finishes_none_twice(
        database_url: str, tmp_path: Path) -> None:
    with FakeGitHub() as github, ScriptedLLM(latency_s=1.0) as llm:
        port = free_port()
        env = user_env(GITHUB_API_URL=github.url, LLM_BASE_URL=llm.base_url, LLM_MODEL="scripted",
                       DATABASE_URL=database_url, PR_REVIEW_HTTP_PORT=str(port),
                       PR_REVIEW_DASHBOARD_PORT=str(free_port()), PR_REVIEW_HOME=str(tmp_path / "home"),
                       PR_REVIEW_LEASE_S="5", PR_REVIEW_SWEEP_INTERVAL_S="1",
                       # Two LLM calls at once: the reviews finish one by one, so the crash lands mid-batch.
                       PR_REVIEW_LLM_GLOBAL_CONCURRENCY="2")
        serve = ServeProcess(env, tmp_path / "serve.log")
        urls = [add_pr(github, files=2) for _ in range(8)]
        try:
            serve.start()
            key = (tmp_path / "home" / "api-key").read_text().strip()  # made by `pr-review serve`
            with Client(f"http://127.0.0.1:{port}", api_key=key) as api:
                batch = api.submit_batch(urls)
                ids = [r["id"] for r in batch["reviews"]]
                wait_for(lambda: api.batch(batch["id"])["counts"].get("succeeded", 0) >= 2, timeout_s=120,
                         what="some reviews to finish before the crash")
                serve.kill_tree()
                with psycopg.connect(database_url) as conn:
                    finished_before = {str(r[0]) for r in conn.execute(
                        "SELECT id FROM jobs WHERE status = 'succeeded'")}
                calls_before = len(llm.requests)

                serve.start()
                wait_for(lambda: api.batch(batch["id"])["counts"].get("succeeded", 0) == len(ids), timeout_s=240,
                         what="every review to finish after the restart")
        finally:
            serve.stop()
        assert 2 <= len(finished_before) < len(ids)
        with psycopg.connect(database_url) as conn:
            succeeded_events = dict(conn.execute(
                "SELECT job_id::text, count(*) FROM events WHERE kind = 'succeeded' GROUP BY job_id").fetchall())
        assert succeeded_events == dict.fromkeys(ids, 1)  # every job finished, each exactly once
        after = llm.requests[calls_before:]
        # Finished work is never paid for again: no call after the restart mentions those PRs' files.
        finished_prs = {r["pr_url"].rsplit("/", 1)[1] for r in batch["reviews"] if r["id"] in finished_before}
        repeated = [c for c in after if any(f"handler_{n}_" in c.text for n in finished_prs)]
        assert not repeated
        assert sum(schema_name(c) == "review_summary" for c in llm.requests) >= len(ids)
