"""A local pr-review for benchmarks: Ray + Serve + a fresh Postgres database, the fakes."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from prreview.config import load_settings
from serve_app.local import LocalStack, free_port
from serve_app.serve_config import DEFAULT_PATH, Overrides
from tests.fakes import FakeFile, FakeGitHub, ScriptedLLM

ADMIN_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class BenchStack:
    github: FakeGitHub
    llm: ScriptedLLM
    local: LocalStack
    database_url: str
    api_key: str  # an operator key of this stack (`PR_REVIEW_API_KEYS`), sent as a Bearer token

    @property
    def api_url(self) -> str:
        return self.local.settings.api_url

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def http(self, timeout_s: float = 30.0) -> httpx.Client:
        """A client of this stack's API that sends its key."""
        return httpx.Client(base_url=self.api_url, headers=self.headers, timeout=timeout_s)


def _fresh_database() -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **info)


def _drop_database(database_url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def bench_stack(*, llm_latency_s: float, env: dict[str, str] | None = None, overrides: Overrides | None = None,
                config_path: Path = DEFAULT_PATH) -> Iterator[BenchStack]:
    """A local stack on the fakes. `env` is set before Ray starts (every Ray process inherits it);
    `overrides` change deployment options of `config_path` (serve_config.yaml by default).

    The stack has one operator key: `PR_REVIEW_API_KEY` when set, else a random one."""
    github, llm = FakeGitHub(), ScriptedLLM(latency_s=llm_latency_s)
    github.start()
    llm.start()
    database_url = _fresh_database()
    api_key = os.environ.get("PR_REVIEW_API_KEY") or secrets.token_urlsafe(24)
    os.environ.update({"GITHUB_API_URL": github.url, "LLM_BASE_URL": llm.base_url, "LLM_MODEL": "scripted",
                       "DATABASE_URL": database_url, "PR_REVIEW_HTTP_PORT": str(free_port()),
                       "PR_REVIEW_DASHBOARD_PORT": str(free_port()), "PR_REVIEW_API_KEYS": f"bench:{api_key}",
                       "PR_REVIEW_API_KEY": api_key, **(env or {})})
    local = LocalStack(load_settings(), config_path=config_path, with_llm_app=False, overrides=overrides or {})
    local.start()
    try:
        yield BenchStack(github, llm, local, database_url, api_key)
    finally:
        local.stop()
        github.stop()
        llm.stop()
        _drop_database(database_url)


def add_prs(github: FakeGitHub, count: int, start: int = 1, files: int = 2) -> list[str]:
    urls = []
    for number in range(start, start + count):
        github.add_pr("bench", "repo", number, [
            FakeFile(f"src/mod_{number}_{i}.py", base="def f(x):\n    return x\n",
                     head=f"def f(x):\n    return eval(x)  # {i}\n") for i in range(files)])
        urls.append(github.pr_url("bench", "repo", number))
    return urls


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
