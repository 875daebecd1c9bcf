"""Shared fixtures: a real PostgreSQL database per test, cloned from a migrated template."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

# One template per test session, so concurrent sessions on one server never collide.
TEMPLATE_DB = f"pr_review_template_{os.getpid()}"


def _admin_url(tmp_root: Path) -> str:
    """The test server: DATABASE_URL (CI and sessions have PostgreSQL on 127.0.0.1), else embedded."""
    url = os.environ.get("PR_REVIEW_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    from prreview.config import Settings
    from prreview.db import start_embedded_postgres

    return start_embedded_postgres(Settings(home=tmp_root))


def with_db(url: str, name: str) -> str:
    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    conninfo["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **conninfo)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _admin_url(tmp_path_factory.mktemp("pg"))


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A database with every migration and LangGraph's checkpoint tables, cloned per test."""
    from prreview.db import migrate

    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    url = with_db(pg_admin_url, TEMPLATE_DB)
    migrate(url)
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")


@pytest.fixture
def database_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    yield with_db(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def stacks(pg_admin_url: str, pg_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Starts real local pr-review stacks (Ray + Serve) on demand; see tests/stack.py."""
    from tests.stack import manager

    with manager(pg_admin_url, TEMPLATE_DB, tmp_path_factory.mktemp("home")) as stack_manager:
        yield stack_manager


@pytest.fixture
def stack(stacks: object) -> object:
    """The default stack: scripted LLM, fake GitHub, short leases. Fakes are reset per test."""
    running = stacks.get()  # type: ignore[attr-defined]
    running.llm.reset()
    return running


@pytest.fixture
def without_stack(stacks: object) -> None:
    """For tests that start their own Ray cluster: no stack runs beside them on the 2 cores."""
    stacks.stop()  # type: ignore[attr-defined]


# Modules that share a running stack run one after another (a stack takes about 20 s to start):
# the secure stack's first (test_access ends on the default stack), then the default stack's. The
# rest keep their order after them, and the fast unit and integration tests come first of all.
STACK_GROUPS = [
    ("tests/e2e/test_webhooks.py", "tests/e2e/test_access.py"),
    ("tests/browser/", "tests/e2e/test_review_service.py", "tests/e2e/test_recovery.py",
     "tests/e2e/test_hostile_pr.py", "tests/e2e/test_batch.py", "tests/e2e/test_autoscale.py",
     "tests/e2e/test_bounds.py"),  # the last module ends on its own bounded stack
    ("tests/e2e/test_chaos.py", "tests/e2e/test_dispatch_bound.py", "tests/e2e/test_metrics.py",
     "tests/e2e/test_push.py"),  # a stack each; after them, the tests with a cluster of their own
]


def _run_order(item: pytest.Item) -> tuple[int, int]:
    path = item.nodeid.split("::", 1)[0]
    if path.startswith(("tests/unit/", "tests/integration/")):
        return (0, 0)
    for group, modules in enumerate(STACK_GROUPS, start=1):
        for position, prefix in enumerate(modules):
            if path.startswith(prefix):
                return (group, position)
    return (len(STACK_GROUPS) + 1, 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_run_order)  # stable: tests keep their order within a module
