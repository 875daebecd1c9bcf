"""Opens what an agent or dispatcher replica needs, from the one Settings object."""

from __future__ import annotations

from dataclasses import dataclass

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg_pool import AsyncConnectionPool

from graph.github import GitHubClient
from graph.llm import LLMClient
from prreview.config import Settings
from prreview.db import open_pool
from prreview.store import JobStore


def require_database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set in this Ray worker; `pr-review serve` sets it for "
                           "the embedded database, a cluster sets it from its Postgres secret.")
    return settings.database_url


async def open_store(settings: Settings, *, max_size: int = 10) -> JobStore:
    return JobStore(await open_pool(require_database_url(settings), max_size=max_size))


def github_client(settings: Settings) -> GitHubClient:
    token = settings.github_token.get_secret_value() if settings.github_token else None
    return GitHubClient(settings.github_api_url, token, timeout_s=settings.github_timeout_s,
                        rate_limit_max_wait_s=settings.github_rate_limit_max_wait_s)


def llm_client(settings: Settings) -> LLMClient:
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return LLMClient(settings.llm_url, model=settings.llm_model, api_key=key, timeout_s=settings.llm_timeout_s,
                     max_retries=settings.llm_max_retries, max_tokens=settings.llm_max_tokens)


@dataclass
class AgentResources:
    pool: AsyncConnectionPool
    store: JobStore
    checkpointer: AsyncPostgresSaver
    github: GitHubClient
    llm: LLMClient

    @classmethod
    async def open(cls, settings: Settings) -> AgentResources:
        store = await open_store(settings)
        checkpointer = AsyncPostgresSaver(conn=store.pool)  # type: ignore[arg-type]
        await checkpointer.setup()
        return cls(store.pool, store, checkpointer, github_client(settings), llm_client(settings))

    async def close(self) -> None:
        await self.github.aclose()
        await self.llm.aclose()
        await self.pool.close()
