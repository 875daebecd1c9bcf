"""What the graph's nodes get at run time, injected per run and never checkpointed."""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from graph.analyzers import Analyzer, default_analyzers
from graph.github import GitHubClient
from graph.llm import CallMeter, LLMClient
from graph.offload import CpuPool, shared_pool

# Signs this process's markers when no key is given: unforgeable, but known to this process only,
# so another replica (or a restart) does not recognise them. Tests use it; a service passes the
# key it keeps in its database.
_PROCESS_MARKER_KEY = secrets.token_bytes(32)


def process_marker_key() -> bytes:
    return _PROCESS_MARKER_KEY


class ProgressSink(Protocol):
    async def emit(self, kind: str, data: dict[str, Any], *, progress: dict[str, Any] | None = None,
                   files_done_delta: int = 0) -> None: ...

    async def head_sha(self, sha: str) -> None: ...


class PRSnapshots(Protocol):
    """Where a PR as fetched is kept, once per head commit, so that checkpoints refer to it instead
    of carrying it (the service: its `JobStore`, the `pr_snapshots` table). `head_sha` is the key:
    a head commit, or a compare range `since..head` for the files changed since an earlier review."""

    async def save_pr_snapshot(self, repo: str, number: int, head_sha: str, data: dict[str, Any]) -> None: ...

    async def load_pr_snapshot(self, repo: str, number: int, head_sha: str) -> dict[str, Any] | None: ...


class MemorySnapshots:
    """Snapshots in this process only (tests, one-off runs): a crash loses them, so a service
    passes its database instead."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, int, str], dict[str, Any]] = {}

    async def save_pr_snapshot(self, repo: str, number: int, head_sha: str, data: dict[str, Any]) -> None:
        self._data.setdefault((repo, number, head_sha), data)

    async def load_pr_snapshot(self, repo: str, number: int, head_sha: str) -> dict[str, Any] | None:
        return self._data.get((repo, number, head_sha))


class SnapshotCache:
    """The last few snapshots a run used, in front of the store: the parallel group reviews of
    one PR read it once. Values are shared, never modified."""

    def __init__(self, store: PRSnapshots, max_entries: int = 4) -> None:
        self.store = store
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, int, str], dict[str, Any]] = OrderedDict()
        self._loading = asyncio.Lock()  # concurrent misses of one key read the store once

    async def save(self, repo: str, number: int, key: str, data: dict[str, Any]) -> None:
        await self.store.save_pr_snapshot(repo, number, key, data)
        self._keep((repo, number, key), data)

    async def load(self, repo: str, number: int, key: str) -> dict[str, Any] | None:
        """The snapshot, or None when the store does not have it (any more)."""
        found = self._get((repo, number, key))
        if found is not None:
            return found
        async with self._loading:
            found = self._get((repo, number, key))
            if found is None:
                found = await self.store.load_pr_snapshot(repo, number, key)
                if found is not None:
                    self._keep((repo, number, key), found)
        return found

    def _get(self, key: tuple[str, int, str]) -> dict[str, Any] | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def _keep(self, key: tuple[str, int, str], data: dict[str, Any]) -> None:
        self._entries[key] = data
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def estimate_tokens(text: str) -> int:
    """Fallback token count (about 3.5 characters a token for code) when no tokenizer is known."""
    return len(text) * 2 // 7 + 1


@dataclass
class ReviewContext:
    github: GitHubClient
    llm: LLMClient
    meter: CallMeter
    progress: ProgressSink
    context_tokens: int
    max_completion_tokens: int
    max_llm_calls: int
    count_tokens: Callable[[str], int] = estimate_tokens
    job_max_tokens: int = 0  # prompt + completion tokens the job may spend; 0: no limit to plan for
    analyzers: Mapping[str, Analyzer] = field(default_factory=default_analyzers)
    content_concurrency: int = 8  # file-content requests to GitHub at once (analyzers, scopes)
    # Secret key of the HMAC that signs the markers pr-review leaves on GitHub (graph.publish); the
    # same for every replica and restart, else earlier reviews are not recognised.
    marker_key: bytes = field(default_factory=process_marker_key)
    cpu: CpuPool = field(default_factory=shared_pool)  # worker processes for CPU-bound steps
    cpu_timeout_s: float = 60.0  # longest a CPU-bound step may run before it is killed
    # The PR as fetched, stored once per head commit (graph state keeps only a reference to it).
    snapshots: PRSnapshots = field(default_factory=MemorySnapshots)
    snapshot_cache: SnapshotCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.snapshot_cache = SnapshotCache(self.snapshots)
