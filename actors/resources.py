"""Opens what a replica needs, from the one Settings object: the schema (migrated by whoever starts
first), the pool, the listener, the clients."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg_pool import AsyncConnectionPool

from graph.github import GitHubClient
from graph.github_app import GitHubApp
from graph.llm import LLMClient
from prreview.config import Settings
from prreview.db import migrate, open_pool
from prreview.lifecycle import Lifecycle
from prreview.notify import Listener
from prreview.store import JobStore

log = logging.getLogger(__name__)


def require_database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set in this Ray worker; `pr-review serve` sets it for "
                           "the embedded database, a cluster sets it from its Postgres secret.")
    return settings.database_url


@dataclass
class Database:
    """A replica's view of PostgreSQL: its pool, the job store and lifecycle on it, and one
    listener connection for the notifications the replica subscribes to."""

    pool: AsyncConnectionPool
    store: JobStore
    lifecycle: Lifecycle
    listener: Listener

    @classmethod
    async def open(cls, settings: Settings, *, max_size: int = 10, timeout_s: float = 30.0) -> Database:
        """Migrates the schema first (idempotent, under an advisory lock): `serve deploy` on an
        empty database gives a working service, whichever replica starts first."""
        url = require_database_url(settings)
        applied = await asyncio.to_thread(migrate, url)
        if applied:
            log.info("database migrated to version %s", applied[-1])
        pool = await open_pool(url, max_size=max_size, timeout_s=timeout_s)
        return cls(pool, JobStore(pool), Lifecycle(pool), Listener(url))

    async def close(self) -> None:
        await self.listener.stop()
        await self.pool.close()


def github_client(settings: Settings) -> GitHubClient:
    """As the GitHub App when GITHUB_APP_ID is set (each job then acts for its installation, see
    `GitHubClient.for_installation`), else with GITHUB_TOKEN (or anonymous). No I/O but reading the
    App's key file; a missing or malformed key stops the start (`AppKeyMissing`, ValueError)."""
    key = settings.github_app_key()
    if settings.github_app_id is not None and key is not None:
        app = GitHubApp(settings.github_api_url, settings.github_app_id, key, timeout_s=settings.github_timeout_s)
        return GitHubClient(settings.github_api_url, None, timeout_s=settings.github_timeout_s,
                            rate_limit_max_wait_s=settings.github_rate_limit_max_wait_s, app=app)
    token = settings.github_token.get_secret_value() if settings.github_token else None
    return GitHubClient(settings.github_api_url, token, timeout_s=settings.github_timeout_s,
                        rate_limit_max_wait_s=settings.github_rate_limit_max_wait_s)


def llm_client(settings: Settings) -> LLMClient:
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return LLMClient(settings.llm_url, model=settings.llm_model, api_key=key, timeout_s=settings.llm_timeout_s,
                     max_retries=settings.llm_max_retries, max_tokens=settings.llm_max_tokens)


@dataclass
class AgentResources:
    db: Database
    checkpointer: AsyncPostgresSaver
    github: GitHubClient
    llm: LLMClient

    @classmethod
    async def open(cls, settings: Settings) -> AgentResources:
        db = await Database.open(settings)
        checkpointer = AsyncPostgresSaver(conn=db.pool)  # type: ignore[arg-type]
        return cls(db, checkpointer, github_client(settings), llm_client(settings))

    async def close(self) -> None:
        await self.github.aclose()
        await self.llm.aclose()
        await self.db.close()
