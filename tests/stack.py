"""A real local pr-review (Ray, Serve, Postgres) against the fakes, shared by e2e-style tests.

Ray runs once per process, so the manager keeps one stack and restarts it only when a test asks
for a different configuration. Every stack gets its own database and free ports.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from prreview.config import load_settings
from prreview.fakes.github import FakeGitHub
from prreview.fakes.llm import ScriptedLLM
from serve_app.client import Client
from serve_app.local import LocalStack, free_port

# Short leases and bounds so failure tests finish in seconds.
TEST_ENV = {
    "PR_REVIEW_LEASE_S": "6",
    "PR_REVIEW_SWEEP_INTERVAL_S": "1",
    "PR_REVIEW_LLM_TIMEOUT_S": "8",
    "PR_REVIEW_LLM_MAX_RETRIES": "1",
    "PR_REVIEW_GITHUB_RATE_LIMIT_MAX_WAIT_S": "4",
    "PR_REVIEW_GITHUB_TIMEOUT_S": "5",
    "LLM_MODEL": "scripted-reviewer",
}


@dataclass
class RunningStack:
    api: Client
    github: FakeGitHub
    llm: ScriptedLLM
    local: LocalStack
    database_url: str
    env: dict[str, str]

    @property
    def api_url(self) -> str:
        return self.local.settings.api_url


@dataclass
class StackManager:
    admin_url: str
    template_db: str
    home: Path
    current: RunningStack | None = None
    current_key: tuple[tuple[str, str], ...] | None = None
    _saved_env: dict[str, str | None] = field(default_factory=dict)

    def get(self, extra_env: dict[str, str] | None = None, *, with_llm_app: bool = False) -> RunningStack:
        env_overrides = {**TEST_ENV, **(extra_env or {})}
        key = tuple(sorted(env_overrides.items())) + (("with_llm_app", str(with_llm_app)),)
        if self.current is not None and self.current_key == key:
            return self.current
        self.stop()
        github, llm = FakeGitHub(), ScriptedLLM()
        github.start()
        llm.start()
        database_url = self._new_database()
        env = {**env_overrides, "GITHUB_API_URL": github.url, "DATABASE_URL": database_url,
               "PR_REVIEW_HOME": str(self.home), "PR_REVIEW_HTTP_PORT": str(free_port()),
               "PR_REVIEW_DASHBOARD_PORT": str(free_port())}
        if not with_llm_app:
            env["LLM_BASE_URL"] = llm.base_url
        self._set_env(env)
        local = LocalStack(load_settings(), with_llm_app=with_llm_app)
        local.start(wait_ready_s=600 if with_llm_app else 180)
        self.current = RunningStack(Client(local.settings.api_url), github, llm, local, database_url, env)
        self.current_key = key
        return self.current

    def stop(self) -> None:
        if self.current is None:
            return
        self.current.api.close()
        self.current.local.stop()
        self.current.github.stop()
        self.current.llm.stop()
        name = psycopg.conninfo.conninfo_to_dict(self.current.database_url)["dbname"]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.current = None
        self._restore_env()

    def _new_database(self) -> str:
        name = f"stack_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {self.template_db}")
        info = psycopg.conninfo.conninfo_to_dict(self.admin_url)
        info["dbname"] = name
        return psycopg.conninfo.make_conninfo("", **info)

    def _set_env(self, env: dict[str, str]) -> None:
        self._saved_env = {k: os.environ.get(k) for k in list(env) + ["LLM_BASE_URL"]}
        os.environ.pop("LLM_BASE_URL", None)
        os.environ.update(env)

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def manager(admin_url: str, template_db: str, home: Path) -> Iterator[StackManager]:
    stacks = StackManager(admin_url, template_db, home)
    try:
        yield stacks
    finally:
        stacks.stop()
