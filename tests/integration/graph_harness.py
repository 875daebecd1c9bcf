"""Runs the compiled review graph in-process against the fake GitHub and the scripted LLM (no Ray,
no database unless a checkpointer is given), the way actors/runner.py builds its context."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from graph.analyzers import Analyzer
from graph.builder import build_review_graph
from graph.context import PRSnapshots, ReviewContext
from graph.github import GitHubClient
from graph.llm import LLMClient, NullMeter
from prreview.demo._patch import parse_patch
from tests.fakes import FakeGitHub, LLMCall, ScriptedLLM
from tests.fakes.github._reviews import find_line

TOKEN = "ghp_graph_tests"


@dataclass
class Events:
    items: list[tuple[str, dict[str, Any], dict[str, Any] | None, int]] = field(default_factory=list)

    async def emit(self, kind: str, data: dict[str, Any], *, progress: dict[str, Any] | None = None,
                   files_done_delta: int = 0) -> None:
        self.items.append((kind, data, progress, files_done_delta))

    async def head_sha(self, sha: str) -> None:
        self.items.append(("head_sha", {"sha": sha}, None, 0))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data, _, _ in self.items if k == kind]


@dataclass
class Run:
    review: dict[str, Any]
    events: Events
    calls: list[LLMCall]  # the LLM calls this run made

    def calls_named(self, schema: str) -> list[LLMCall]:
        return [c for c in self.calls
                if ((c.request.get("response_format") or {}).get("json_schema") or {}).get("name") == schema]


@dataclass
class Harness:
    github: FakeGitHub
    llm: ScriptedLLM

    async def review(self, repo: str, number: int, *, job_id: str | None = None,
                     options: dict[str, Any] | None = None, context_tokens: int = 8192,
                     max_llm_calls: int = 50, job_max_tokens: int = 0,
                     analyzers: Mapping[str, Analyzer] | None = None,
                     checkpointer: BaseCheckpointSaver | None = None, snapshots: PRSnapshots | None = None,
                     events: Events | None = None, resume: bool = False) -> Run:
        """One review; `resume`: go on from the checkpoint of `job_id` (after a run was cut short)."""
        github = GitHubClient(self.github.url, TOKEN)
        llm = LLMClient(self.llm.base_url, model=None, api_key=None, timeout_s=30, max_retries=1,
                        max_tokens=1024)
        events = events if events is not None else Events()
        extra: dict[str, Any] = {"analyzers": analyzers} if analyzers is not None else {}
        if snapshots is not None:
            extra["snapshots"] = snapshots
        context = ReviewContext(github=github, llm=llm, meter=NullMeter(), progress=events,
                                context_tokens=context_tokens, max_completion_tokens=1024,
                                max_llm_calls=max_llm_calls, job_max_tokens=job_max_tokens, **extra)
        before = len(self.llm.requests)
        job_id = job_id or uuid.uuid4().hex
        graph = build_review_graph(checkpointer)
        config = {"configurable": {"thread_id": job_id}}
        try:
            start = None if resume else {"job_id": job_id, "repo": repo, "number": number, "options": options or {}}
            durability = {"durability": "sync"} if checkpointer is not None else {}  # as the service runs it
            result = await graph.ainvoke(start, config, context=context, **durability)  # type: ignore[call-overload]
        finally:
            await github.aclose()
            await llm.aclose()
        return Run(result["review"], events, self.llm.requests[before:])


@pytest.fixture
def harness() -> Iterator[Harness]:
    with FakeGitHub() as github, ScriptedLLM() as llm:
        yield Harness(github, llm)


def assert_on_the_diff(github: FakeGitHub, repo: str, number: int, findings: list[dict[str, Any]]) -> None:
    """Every finding sits where GitHub (the fake, with GitHub's rules) accepts an inline comment."""
    owner, name = repo.split("/")
    url = f"{github.url}/repos/{owner}/{name}/pulls/{number}/files"
    files = httpx.get(url, params={"per_page": 100}).json()
    patches = {f["filename"]: parse_patch(f.get("patch") or "") for f in files}
    for finding in findings:
        lines = patches[finding["path"]]
        assert find_line(lines, finding["line"], finding["side"]) is not None, finding
        if finding.get("end_line"):
            assert find_line(lines, finding["end_line"], finding["side"]) is not None, finding
