"""A CPU-bound step that runs past its bound degrades the review and says so; it never fails it."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from graph import nodes
from graph.context import ReviewContext
from graph.llm import NullMeter
from graph.offload import CpuStepTimeout
from graph.repo_config import RepoConfig
from graph.state import ReviewState

PATCH = "@@ -0,0 +1,2 @@\n+x = 1\n+y = 2"
FILES = [{"path": p, "status": "added", "additions": 2, "deletions": 0, "patch": PATCH} for p in ("a.py", "b.py")]


class TimesOut:
    """A worker pool whose every step runs past its bound."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    async def run(self, fn: Any, *args: Any, timeout_s: float, **kwargs: Any) -> Any:
        self.steps.append(fn.__name__)
        raise CpuStepTimeout(fn.__qualname__, timeout_s)


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, kind: str, data: dict[str, Any], **_: Any) -> None:
        self.items.append((kind, data))

    async def head_sha(self, sha: str) -> None: ...


def _runtime(pool: TimesOut) -> Runtime[ReviewContext]:
    context = ReviewContext(github=None, llm=None, meter=NullMeter(), progress=Events(),  # type: ignore[arg-type]
                            context_tokens=4096, max_completion_tokens=512, max_llm_calls=10,
                            cpu=pool, cpu_timeout_s=7)  # type: ignore[arg-type]
    return Runtime(context=context)


def _state(**extra: Any) -> ReviewState:
    pr = {"title": "t", "body": "", "commit_messages": [], "head_sha": "1" * 40, "files": FILES}
    return ReviewState(job_id="j", repo="o/r", number=1, options={}, pr=pr,  # type: ignore[typeddict-item]
                       config=RepoConfig().model_dump(), **extra)


async def test_analysis_past_its_bound_is_reported_as_a_timeout() -> None:
    pool = TimesOut()
    result = await nodes.analyze(_state(), _runtime(pool))
    assert pool.steps == ["changed_files"]
    assert result["analysis"] == [] and result["scopes"] == {}
    assert {r["name"]: r["status"] for r in result["analyzers"]} == {"ruff": "timeout", "secrets": "timeout"}
    assert "changed_files did not finish within 7 s" in result["analyzers"][0]["detail"]


async def test_planning_past_its_bound_lists_every_file_as_not_reviewed() -> None:
    result = await nodes.plan(_state(), _runtime(TimesOut()))
    assert result["groups"] == []
    assert [s["path"] for s in result["skipped"]] == ["a.py", "b.py"]
    assert "plan_review did not finish within 7 s" in result["skipped"][0]["reason"]


async def test_collecting_past_its_bound_says_which_files_lost_their_findings() -> None:
    state = _state(groups=[{"paths": ["a.py", "b.py"]}], skipped=[], group_findings=[
        {"path": "a.py", "line": 1, "severity": "major", "title": "t", "body": "b"}])
    result = await nodes.collect(state, _runtime(TimesOut()))
    assert result["findings"] == [] and result["files_reviewed"] == []
    assert [s["path"] for s in result["skipped"]] == ["a.py", "b.py"]
    assert "its findings could not be placed on the diff" in result["skipped"][0]["reason"]


async def test_publishing_past_its_bound_is_a_failed_publication_and_the_review_stands() -> None:
    review = {"summary": "s", "verdict": "comment", "findings": [], "files_skipped": []}
    result = await nodes.publish(_state(review=review), _runtime(TimesOut()))
    assert result["review"]["publication"]["status"] == "failed"
    assert result["review"]["publication"]["error"]["code"] == "timeout"
    assert result["review"]["summary"] == "s"
