"""The schema migrates itself: from empty, from the previous release with its data, and with many
replicas (or the migration Job) starting at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from prreview.db import migrate, schema_version
from prreview.sql import migrations
from tests.conftest import with_db

pytestmark = pytest.mark.integration

PREVIOUS_RELEASE = 2  # the schema version the first release (0.1.0) shipped


@pytest.fixture
def empty_database(pg_admin_url: str) -> Iterator[str]:
    name = f"m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield with_db(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_an_empty_database_gets_every_table_langgraphs_included(empty_database: str) -> None:
    applied = migrate(empty_database)
    assert applied == [v for v, _, _ in migrations()]
    assert {"jobs", "events", "batches", "batch_items", "llm_slots", "pr_snapshots", "service_secrets",
            "checkpoints", "checkpoint_blobs", "checkpoint_writes"} <= tables(empty_database)
    assert migrate(empty_database) == []  # idempotent
    assert schema_version(empty_database) == migrations()[-1][0]


def test_many_replicas_migrating_at_once_apply_each_step_once(empty_database: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: migrate(empty_database), range(8)))
    assert sorted(v for applied in results for v in applied) == [v for v, _, _ in migrations()]
    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("SELECT version FROM pr_review_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [v for v, _, _ in migrations()]


def test_upgrade_from_the_previous_release_keeps_its_jobs_and_they_go_on(empty_database: str) -> None:
    # The previous release's schema, migrated the way it migrated itself, with work in flight.
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE pr_review_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz DEFAULT now())")
        for version, name, sql in migrations()[:PREVIOUS_RELEASE]:
            conn.execute(sql)
            conn.execute("INSERT INTO pr_review_migrations (version, name) VALUES (%s, %s)", (version, name))
        queued, running = uuid.uuid4(), uuid.uuid4()
        for job_id, status, number in ((queued, "queued", 1), (running, "running", 2)):
            conn.execute("INSERT INTO jobs (id, pr_url, repo, number, options_hash, status, attempts, lease_owner)"
                         " VALUES (%s, %s, 'Acme/Shop', %s, 'h', %s, %s, %s)",
                         (job_id, f"https://github.com/Acme/Shop/pull/{number}", number, status,
                          1 if status == "running" else 0, "old-replica" if status == "running" else None))
            conn.execute("INSERT INTO events (job_id, kind) VALUES (%s, 'queued')", (job_id,))
    assert migrate(empty_database) == [v for v, _, _ in migrations()[PREVIOUS_RELEASE:]]
    with psycopg.connect(empty_database, autocommit=True) as conn:
        # The old rows are all there, and a status change now writes its event by itself.
        conn.execute("UPDATE jobs SET status = 'queued', status_reason = 'upgraded', lease_owner = NULL "
                     "WHERE id = %s", (running,))
        events = conn.execute("SELECT job_id, kind FROM events ORDER BY id").fetchall()
        # The case-folded key now sees the old job: a second active one for the same PR is refused.
        duplicate = conn.execute("INSERT INTO jobs (id, pr_url, repo, number, options_hash, job_key) VALUES "
                                 "(%s, 'x', 'acme/shop', 1, 'h', 'local:acme/shop#1:h') "
                                 "ON CONFLICT DO NOTHING RETURNING id",
                                 (uuid.uuid4(),)).fetchone()
    assert events == [(queued, "queued"), (running, "queued"), (running, "requeued")]
    assert duplicate is None


def test_the_migrate_command_is_what_an_operator_runs_as_a_job(empty_database: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database}
    first = subprocess.run([sys.executable, "-m", "serve_app.cli", "db", "migrate"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    latest = migrations()[-1][0]
    assert f"from version 0 to {latest}" in first.stdout
    again = subprocess.run([sys.executable, "-m", "serve_app.cli", "db", "migrate"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stdout
