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

import httpx
import psycopg
import pytest

from prreview.config import load_settings
from serve_app.client import Client
from serve_app.local import LocalStack, free_port
from serve_app.serve_config import Overrides
from tests.fakes import FakeGitHub, ScriptedLLM

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


# Every variable a stack has set in this process, with its value from before the first stack.
ENV_BEFORE_STACKS: dict[str, str | None] = {}


@pytest.fixture(autouse=True)
def without_stack_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the tests of a folder that imports it: the environment as it was before any stack
    started (the stacks stay up between tests, their variables in this process)."""
    for name, value in ENV_BEFORE_STACKS.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@dataclass
class RunningStack:
    api: Client
    github: FakeGitHub
    llm: ScriptedLLM
    local: LocalStack
    database_url: str
    env: dict[str, str]
    key: str  # the admin key `pr-review serve` made (what the local CLI sends)
    http: httpx.Client  # raw HTTP with that key, for tests of exact answers

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

    def get(self, extra_env: dict[str, str] | None = None, *, with_llm_app: bool = False,
            deployments: Overrides | None = None) -> RunningStack:
        """The running stack for this configuration (started anew when it differs): `extra_env`
        for the service's settings, `deployments` to override serve_config.yaml's options."""
        env_overrides = {**TEST_ENV, **(extra_env or {})}
        key = tuple(sorted(env_overrides.items())) + (("with_llm_app", str(with_llm_app)),
                                                      ("deployments", repr(sorted((deployments or {}).items()))))
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
        local = LocalStack(load_settings(), with_llm_app=with_llm_app, overrides=dict(deployments or {}))
        try:
            local.start(wait_ready_s=600 if with_llm_app else 180)
        except BaseException:
            # Leave nothing behind (Ray initialized in this process, this stack's variables): the
            # next test's stack must start from a clean slate, not fail on `ray.init` twice.
            local.stop()
            github.stop()
            llm.stop()
            self._drop_database(database_url)
            self._restore_env()
            raise
        api_key = operator_key(env) or (local.key_file.read_text().strip() if local.key_file else "")
        http = httpx.Client(base_url=local.settings.api_url, headers={"Authorization": f"Bearer {api_key}"},
                            timeout=30)
        self.current = RunningStack(Client(local.settings.api_url, api_key=api_key), github, llm, local,
                                    database_url, env, api_key, http)
        self.current_key = key
        return self.current

    def stop(self) -> None:
        if self.current is None:
            return
        self.current.api.close()
        self.current.http.close()
        self.current.local.stop()
        self.current.github.stop()
        self.current.llm.stop()
        self._drop_database(self.current.database_url)
        self.current = None
        self._restore_env()

    def _drop_database(self, url: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _new_database(self) -> str:
        name = f"stack_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {self.template_db}")
        info = psycopg.conninfo.conninfo_to_dict(self.admin_url)
        info["dbname"] = name
        return psycopg.conninfo.make_conninfo("", **info)

    def _set_env(self, env: dict[str, str]) -> None:
        for name in [*env, "LLM_BASE_URL"]:
            ENV_BEFORE_STACKS.setdefault(name, os.environ.get(name))
        self._saved_env = {k: os.environ.get(k) for k in list(env) + ["LLM_BASE_URL"]}
        os.environ.pop("LLM_BASE_URL", None)
        os.environ.update(env)

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def operator_key(env: dict[str, str]) -> str | None:
    """The first operator key's secret, when the stack runs with PR_REVIEW_API_KEYS (then
    `pr-review serve` makes no local key)."""
    entries = [e for e in env.get("PR_REVIEW_API_KEYS", "").split(",") if ":" in e]
    return entries[0].split(":", 1)[1] if entries else None


@contextmanager
def manager(admin_url: str, template_db: str, home: Path) -> Iterator[StackManager]:
    stacks = StackManager(admin_url, template_db, home)
    try:
        yield stacks
    finally:
        stacks.stop()
