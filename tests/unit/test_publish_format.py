"""What a published review looks like, and which earlier review counts as the last one."""

from __future__ import annotations

from typing import Any

from graph.publish import comment_body, latest_marked_review, looks_like_code, review_body, updated_body


def _review(body: str, login: str = "pr-review-bot", kind: str = "User", rid: int = 1) -> dict[str, Any]:
    return {"id": rid, "body": body, "user": {"login": login, "type": kind}}


def test_only_code_becomes_a_suggestion_block() -> None:
    assert looks_like_code("offset = (page - 1) * page_size", "    offset = page * page_size")
    assert looks_like_code("    await asyncio.sleep(delay)\n    return False", "    asyncio.sleep(delay)")
    assert not looks_like_code("Use placeholders ($1, %s) and pass the values as arguments.", "q = f'..'")
    assert not looks_like_code("Catch the specific exception you expect and log or re-raise it.", "except:")
    assert not looks_like_code("Use `with open(...) as f:`.", "f = open(p)")
    # an expression offered for a whole assignment line would delete the assignment
    assert not looks_like_code('os.environ["NAME"]', 'API_KEY = "pk-123"')
    assert looks_like_code('API_KEY = os.environ["API_KEY"]', 'API_KEY = "pk-123"')


def test_a_suggestion_keeps_the_line_indentation_and_carries_the_finding_key() -> None:
    finding = {"path": "a.py", "line": 3, "side": "RIGHT", "severity": "major", "category": "correctness",
               "title": "Off by one", "body": "Pages start at 1.", "source": "model",
               "suggestion": "offset = (page - 1) * size"}
    body = comment_body(finding, "abc123def4567890", "        offset = page * size")
    assert "```suggestion\n        offset = (page - 1) * size\n```" in body
    assert body.startswith("🟠 **[major] Off by one** · correctness · found by model")
    assert body.endswith("<!-- pr-review:finding=abc123def4567890 -->")
    left = comment_body({**finding, "side": "LEFT"}, "k" * 16, "x")
    assert "```suggestion" not in left and "**Suggested fix:** offset" in left


def _latest(reviews: list[dict[str, Any]], login: str | None, shas: list[str]) -> int:
    found = latest_marked_review(reviews, login, shas)
    assert found is not None
    return int(found["id"])


def test_the_newest_reviewed_head_wins_and_foreign_markers_do_not_count() -> None:
    shas = ["a" * 40, "b" * 40, "c" * 40]
    reviews = [_review(f"<!-- pr-review:head={shas[2]} -->", login="mallory", rid=1),
               _review(f"<!-- pr-review:head={shas[1]} -->", rid=2),
               _review(f"<!-- pr-review:head={shas[0]} -->", rid=3),  # updated later, older head
               _review("no marker", rid=4)]
    assert _latest(reviews, "pr-review-bot", shas) == 2
    bot = [_review(f"<!-- pr-review:head={shas[0]} -->", login="review[bot]", kind="Bot", rid=5)]
    assert _latest(reviews + bot, None, shas) == 5  # no login known: bots only
    force_pushed = [_review("<!-- pr-review:head=" + "d" * 40 + " -->", rid=6)]
    assert _latest(force_pushed, "pr-review-bot", shas) == 6  # still the last one


def test_review_bodies_carry_markers_and_updates_keep_job_markers() -> None:
    review = {"summary": "Found 1 issue.", "verdict": "comment", "model": "m",
              "findings": [{"severity": "minor", "title": "t", "path": "a.py", "line": 1}],
              "files_skipped": [{"path": "x.png", "reason": "binary file"}], "analyzers": [],
              "incremental": None}
    body = review_body(review, job_id="j1", head_sha="1" * 40, inline=1, unplaced=[])
    assert body.endswith("<!-- pr-review:job=j1 -->\n<!-- pr-review:head=" + "1" * 40 + " -->")
    assert "**Findings:** 1 minor (1 inline below)" in body and "`x.png`: binary file" in body
    updated = updated_body(body, {**review, "summary": "Nothing new."}, job_id="j2", head_sha="2" * 40)
    assert "<!-- pr-review:job=j1 -->" in updated and "<!-- pr-review:job=j2 -->" in updated
    assert updated.count("pr-review:head=") == 1 and "head=" + "2" * 40 in updated
    assert "**Update for `222222222222`:** Nothing new. No new findings." in updated
