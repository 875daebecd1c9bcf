"""What the graph's nodes get at run time, injected per run and never checkpointed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from graph.analyzers import Analyzer, default_analyzers
from graph.github import GitHubClient
from graph.llm import CallMeter, LLMClient


class ProgressSink(Protocol):
    async def emit(self, kind: str, data: dict[str, Any], *, progress: dict[str, Any] | None = None,
                   files_done_delta: int = 0) -> None: ...

    async def head_sha(self, sha: str) -> None: ...


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
