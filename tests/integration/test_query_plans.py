"""The statements that run all the time (each dispatcher tick, sweep, submit, status page) read
jobs by index: with a month of finished reviews in the table, none scans every job."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from prreview.sql import queries

pytestmark = pytest.mark.integration

FINISHED = 30_000  # a month of a busy team's reviews
ACTIVE = 20

# Each statement with the values it runs with; EXPLAIN plans it without running it.
HOT: dict[str, dict[str, Any]] = {
    "queue_stats": {},
    "recent_failures": {"limit": 5},
    "claim": {"limit": 8, "exclude": []},
    "recover": {"id": None, "only_expired": True, "max_attempts": 3, "reason": "lease expired"},
    "purge_expired": {"days": 30},
    "leftover_threads": {"limit": 100},
    "submitter_usage": {"submitted_by": "key:team-7"},
    "submit": {"id": uuid.uuid4(), "pr_url": "https://github.com/acme/shop/pull/1", "repo": "acme/shop", "number": 1,
               "options": "{}", "options_hash": "h", "key": "key:team-7:acme/shop#1:h", "submitted_by": "key:team-7",
               "head_sha": None, "installation_id": None, "max_queued": 1000, "max_active": 10, "max_per_hour": 100},
    "find_reusable_job": {"key": "key:team-7:acme/shop#1:h"},
    "list_jobs": {"status": None, "submitted_by": "key:team-7", "limit": 50},
}


@pytest.fixture
def busy_database(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO jobs (id, pr_url, repo, number, options_hash, job_key, submitted_by, status,
                              created_at, finished_at, error)
            SELECT gen_random_uuid(), 'https://github.com/acme/shop/pull/' || n, 'acme/shop', n, 'h',
                   'key:team-' || n %% 40 || ':acme/shop#' || n || ':h', 'key:team-' || n %% 40,
                   CASE WHEN n <= %(active)s THEN 'running' WHEN n %% 50 = 0 THEN 'failed' ELSE 'succeeded' END,
                   now() - n * interval '80 seconds',
                   CASE WHEN n > %(active)s THEN now() - n * interval '80 seconds' + interval '1 minute' END,
                   CASE WHEN n %% 50 = 0 THEN '{"code": "llm_error", "message": "m"}'::jsonb END
            FROM generate_series(1, %(rows)s) AS n""", {"active": ACTIVE, "rows": FINISHED + ACTIVE})
        # The running reviews' LangGraph threads, a dozen checkpoints each (finished ones are deleted).
        conn.execute("INSERT INTO checkpoints (thread_id, checkpoint_id, checkpoint) SELECT id::text, s::text, '{}' "
                     "FROM jobs, generate_series(1, 12) AS s WHERE status = 'running'")
        conn.execute("ANALYZE")
        yield conn


def scanned_tables(plan: dict[str, Any]) -> set[str]:
    """The tables a plan reads whole (sequential scans), at any depth."""
    found = {plan["Relation Name"]} if plan.get("Node Type") == "Seq Scan" else set()
    for child in plan.get("Plans", []):
        found |= scanned_tables(child)
    return found


def test_hot_statements_never_scan_every_job(busy_database: psycopg.Connection[Any]) -> None:
    scanning = {}
    for name, values in HOT.items():
        row = busy_database.execute(f"EXPLAIN (FORMAT JSON) {queries()[name]}", values).fetchone()
        assert row is not None
        if "jobs" in scanned_tables(row[0][0]["Plan"]):
            scanning[name] = row[0][0]["Plan"]
    assert not scanning, scanning
