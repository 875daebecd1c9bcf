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


def _with_db(url: str, name: str) -> str:
    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    conninfo["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **conninfo)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _admin_url(tmp_path_factory.mktemp("pg"))


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A database with every migration and LangGraph's checkpoint tables, cloned per test."""
    from langgraph.checkpoint.postgres import PostgresSaver

    from prreview.db import migrate

    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    url = _with_db(pg_admin_url, TEMPLATE_DB)
    migrate(url)
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
    yield url
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")


@pytest.fixture
def database_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    yield _with_db(pg_admin_url, name)
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
