"""A local pr-review for benchmarks: Ray + Serve + a fresh Postgres database, the fakes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from prreview.config import load_settings
from prreview.fakes.github import FakeGitHub
from prreview.fakes.llm import ScriptedLLM
from serve_app.local import LocalStack, free_port

ADMIN_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class BenchStack:
    github: FakeGitHub
    llm: ScriptedLLM
    local: LocalStack
    database_url: str

    @property
    def api_url(self) -> str:
        return self.local.settings.api_url


def _fresh_database() -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **info)


@contextmanager
def bench_stack(*, llm_latency_s: float, env: dict[str, str] | None = None) -> Iterator[BenchStack]:
    github, llm = FakeGitHub(), ScriptedLLM(latency_s=llm_latency_s)
    github.start()
    llm.start()
    database_url = _fresh_database()
    os.environ.update({"GITHUB_API_URL": github.url, "LLM_BASE_URL": llm.base_url, "LLM_MODEL": "scripted",
                       "DATABASE_URL": database_url, "PR_REVIEW_HTTP_PORT": str(free_port()),
                       "PR_REVIEW_DASHBOARD_PORT": str(free_port()), **(env or {})})
    local = LocalStack(load_settings(), with_llm_app=False)
    local.start()
    try:
        yield BenchStack(github, llm, local, database_url)
    finally:
        local.stop()
        github.stop()
        llm.stop()


def add_prs(github: FakeGitHub, count: int, start: int = 1, files: int = 2) -> list[str]:
    from prreview.fakes.github import FakeFile

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
