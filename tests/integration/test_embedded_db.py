"""With DATABASE_URL unset, pr-review runs its own PostgreSQL under PR_REVIEW_HOME."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from prreview.config import Settings
from prreview.db import migrate, resolve_database_url
from prreview.sql import migrations

pytestmark = pytest.mark.integration


def test_embedded_postgres_starts_migrates_and_is_reused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=None)
    url = resolve_database_url(settings)
    assert (tmp_path / "home" / "postgres" / "PG_VERSION").exists()
    assert migrate(url) == [version for version, _, _ in migrations()]
    assert migrate(url) == []  # idempotent
    assert resolve_database_url(settings) == url  # a second start finds the running server
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"jobs", "batches", "batch_items", "events", "llm_slots", "pr_review_migrations"} <= tables
