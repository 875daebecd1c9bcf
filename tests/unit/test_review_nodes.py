"""Review steps that decide on failures and verdicts, with a stand-in LLM client."""

from __future__ import annotations

from typing import Any

from graph.context import ReviewContext
from graph.llm import NullMeter, TokenUsage
from graph.nodes import _review_chunks, decide_verdict
from graph.state import GroupTask
from prreview.errors import BudgetExceeded, LLMError


class StubLLM:
    """Refuses prompts with more than `max_files` files as too long, as vLLM does; else one finding
    per file shown."""

    def __init__(self, max_files: int = 1, refuse: Exception | None = None) -> None:
        self.max_files, self.refuse = max_files, refuse
        self.prompts: list[str] = []

    async def chat_json(self, messages: list[dict[str, str]], **_: Any) -> tuple[dict[str, Any], TokenUsage]:
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        if self.refuse:
            raise self.refuse
        paths = [p.split('"')[0] for p in prompt.split('<pr_file path="')[1:]]
        if len(paths) > self.max_files:
            raise LLMError("This model's maximum context length is 4096 tokens. However, you requested 5000.")
        findings = [{"path": p, "line": 1, "severity": "minor", "title": "t"} for p in paths]
        return {"findings": findings}, TokenUsage()


def _context(llm: StubLLM) -> ReviewContext:
    return ReviewContext(github=None, llm=llm, meter=NullMeter(), progress=None,  # type: ignore[arg-type]
                         context_tokens=4096, max_completion_tokens=512, max_llm_calls=10)


def _task(paths: list[str]) -> tuple[GroupTask, list[dict[str, Any]]]:
    chunks = [{"path": p, "text": f'<pr_file path="{p}">\nR1    + | x = 1\n</pr_file>', "tokens": 10,
               "last": True} for p in paths]
    task = GroupTask(group={"index": 0, "paths": paths, "chunks": chunks, "completes": paths},
                     pr={"title": "t", "body": "", "commit_messages": []}, repo="o/r", number=1, options={},
                     prompt={})
    return task, chunks


async def test_a_group_too_long_for_the_model_is_halved_until_it_fits() -> None:
    llm = StubLLM(max_files=1)
    task, chunks = _task(["a.py", "b.py", "c.py"])
    findings, failed = await _review_chunks(_context(llm), task, chunks)
    assert failed == []
    assert sorted(f["path"] for f in findings) == ["a.py", "b.py", "c.py"]
    assert len(llm.prompts) == 5  # 3 files refused, then 1 and 2 (refused), then 1 and 1


async def test_a_single_part_the_model_refuses_is_listed_with_the_reason() -> None:
    task, chunks = _task(["a.py"])
    _, failed = await _review_chunks(_context(StubLLM(refuse=LLMError("upstream said no"))), task, chunks)
    assert failed == [{"path": "a.py", "reason": "the model failed on this part: upstream said no",
                       "code": "llm_error"}]


async def test_a_spent_budget_skips_the_group_with_its_code() -> None:
    task, chunks = _task(["a.py", "b.py"])
    refuse = BudgetExceeded("The review used its budget of 3 LLM calls.")
    _, failed = await _review_chunks(_context(StubLLM(refuse=refuse)), task, chunks)
    assert [(f["path"], f["code"]) for f in failed] == [(p, "budget_exceeded") for p in ("a.py", "b.py")]
    assert failed[0]["reason"] == "not reviewed: The review used its budget of 3 LLM calls."


def test_the_verdict_follows_the_findings_not_the_model() -> None:
    major, minor = [{"severity": "major"}], [{"severity": "minor"}]
    assert decide_verdict("approve", major, "major") == "request_changes"
    assert decide_verdict("request_changes", minor, "major") == "comment"
    assert decide_verdict("approve", major, "critical") == "comment"  # the repository's threshold
    assert decide_verdict("approve", [], "major") == "approve"
    assert decide_verdict("comment", [], "major") == "comment"  # the model may only be more careful
