"""A PR built to stall the service: a 20,000-character line that made the secret scanner backtrack
for minutes on the agent replica's event loop (heartbeats stopped, leases expired, every review on
the replica lost an attempt), and a 5 MB file. It is reviewed, and a review running beside it on
the same replica keeps its first attempt."""

from __future__ import annotations

from typing import Any

import pytest

from prreview.demo import FakeFile
from prreview.demo.toy_reviewer import default_responder
from tests.helpers import add_pr, schema_name, wait_for, wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

BANNER = 'BANNER = "' + "token" * 4000 + '"'  # 20,000 characters of `token`s on one line
NUMBER = 9000


def hostile_files() -> list[FakeFile]:
    banner = f"import os\n\n{BANNER}\n\n\ndef banner():\n    return BANNER\n"
    big = "".join(f"ROW_{i} = {i!r}  # generated table row\n" for i in range(150_000))  # about 5 MB
    assert len(BANNER) >= 20_000 and len(big) >= 5_000_000
    return [FakeFile("app/banner.py", head=banner), FakeFile("app/table.py", head=big)]


def guarded(request: dict[str, Any]) -> dict[str, Any] | str:
    """The toy reviewer, except on the banner, which its own (backtracking) patterns cannot read:
    there it flags the banner line, with a suggestion, so publishing reads the line too."""
    text = "\n".join(str(m.get("content") or "") for m in request.get("messages") or [])
    if "tokentoken" not in text:
        return default_responder(request)
    if schema_name_of(request) == "review_summary":
        return {"summary": "One long literal.", "verdict": "comment"}
    return {"findings": [{"path": "app/banner.py", "line": 3, "side": "RIGHT", "severity": "minor",
                          "category": "maintainability", "title": "A very long literal",
                          "body": "Load it from a file.", "suggestion": 'BANNER = load_banner()'}]}


def schema_name_of(request: dict[str, Any]) -> str:
    return str(((request.get("response_format") or {}).get("json_schema") or {}).get("name") or "")


def test_a_hostile_pr_is_reviewed_and_the_review_beside_it_keeps_its_attempt(stack) -> None:
    stack.llm.responder = guarded
    stack.llm.latency_s = 1.0
    try:
        ordinary = stack.api.submit(add_pr(stack.github, files=2))
        wait_for(lambda: any(c.outcome is None for c in stack.llm.requests), timeout_s=60,
                 what="the ordinary review's first LLM call")
        stack.github.add_pr("acme", "shop", NUMBER, hostile_files(), title="Add a banner and a table",
                            body="Adds the banner shown at start-up, and a lookup table.")
        hostile = stack.api.submit(stack.github.pr_url("acme", "shop", NUMBER), options={"post": True})
        done = wait_terminal(stack.api, hostile["id"], timeout_s=240)
        beside = wait_terminal(stack.api, ordinary["id"], timeout_s=120)
    finally:
        stack.llm.responder = None
        stack.llm.latency_s = 0.0
    assert done["status"] == "succeeded", done["error"]
    assert beside["status"] == "succeeded", beside["error"]
    assert beside["attempts"] == 1 and done["attempts"] == 1  # no lease expired on the replica
    review = done["review"]
    assert review["files_reviewed"] == ["app/banner.py"]
    assert {s["path"]: s["reason"] for s in review["files_skipped"]} == {
        "app/table.py": "GitHub sent no diff for it (too large to display)"}
    assert {a["name"]: a["status"] for a in review["analyzers"]} == {"ruff": "ok", "secrets": "ok"}
    [finding] = [f for f in review["findings"] if f["source"] == "model"]
    assert (finding["path"], finding["line"]) == ("app/banner.py", 3)
    publication = review["publication"]
    assert publication["status"] == "posted" and publication["inline_comments"] == len(review["findings"])
    assert [schema_name(c) for c in stack.llm.requests if "tokentoken" in c.text] == ["group_review"]
