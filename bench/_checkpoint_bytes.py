"""What a review stores, counted by the database itself: a fresh database whose checkpoint and PR
snapshot tables record the size of every row written into them, and the PRs the storage benchmarks
review.

Sizes are logical bytes: a blob's length, a JSON document's length as text. On disk PostgreSQL
compresses large values (TOAST), so the pages used are fewer; the ratios between variants hold.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from prreview.db import migrate
from prreview.demo import install_sample_pr
from tests.fakes import FakeGitHub

ADMIN_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Every row written (insert or update) into these tables adds its size to `bench_bytes`, by thread
# (LangGraph's tables) or by PR (`owner/repo#number`, the snapshots).
_COUNTERS = {
    "checkpoints": ("NEW.thread_id", "octet_length(NEW.checkpoint::text) + octet_length(NEW.metadata::text)"),
    "checkpoint_blobs": ("NEW.thread_id", "coalesce(octet_length(NEW.blob), 0)"),
    "checkpoint_writes": ("NEW.thread_id", "octet_length(NEW.blob)"),
    "pr_snapshots": ("NEW.repo || '#' || NEW.number", "octet_length(NEW.data::text)"),
}
CHECKPOINT_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


def _install_counters(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("CREATE TABLE bench_bytes (tbl text NOT NULL, owner text NOT NULL, bytes bigint NOT NULL)")
    for table, (owner, size) in _COUNTERS.items():
        conn.execute(f"""
            CREATE FUNCTION bench_count_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO bench_bytes VALUES ('{table}', {owner}, {size});
                RETURN NULL;
            END $$""")
        conn.execute(f"CREATE TRIGGER bench_count AFTER INSERT OR UPDATE ON {table} "
                     f"FOR EACH ROW EXECUTE FUNCTION bench_count_{table}()")


@contextmanager
def counting_database() -> Iterator[str]:
    """A fresh, migrated database that counts the bytes written into its checkpoint and snapshot
    tables; dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo("", **info)
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            _install_counters(conn)
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass(frozen=True)
class Written:
    checkpoints: int  # rows of the `checkpoints` table: one per graph step saved
    checkpoint_bytes: int  # into the three checkpoint tables
    snapshot_bytes: int


def written(url: str, thread_id: str, pr: str | None = None) -> Written:
    """What was written for one LangGraph thread (and one PR's snapshots, `owner/repo#number`)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tbl, count(*), sum(bytes) FROM bench_bytes WHERE owner = %s OR owner = %s "
                            "GROUP BY tbl", (thread_id, pr or "")).fetchall()
    by_table = {str(table): (int(count), int(size)) for table, count, size in rows}
    return Written(checkpoints=by_table.get("checkpoints", (0, 0))[0],
                   checkpoint_bytes=sum(by_table.get(t, (0, 0))[1] for t in CHECKPOINT_TABLES),
                   snapshot_bytes=by_table.get("pr_snapshots", (0, 0))[1])


@dataclass(frozen=True)
class PRCase:
    name: str
    repo: str
    number: int

    @property
    def key(self) -> str:
        return f"{self.repo}#{self.number}"


def install_prs(github: FakeGitHub) -> list[PRCase]:
    """The PRs the storage benchmarks review: the demo's sample PR, a 24-file and a 300-file one."""
    install_sample_pr(github)
    github.make_synthetic_pr("bench", "storage", 24, file_count=24)
    github.make_synthetic_pr("bench", "storage", 300, file_count=300)
    return [PRCase("sample, 5 files", "acme/payments", 42), PRCase("24 files", "bench/storage", 24),
            PRCase("300 files", "bench/storage", 300)]


def kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"
