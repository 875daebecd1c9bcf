"""Findings are placed only where GitHub accepts a comment, merged, filtered and ranked."""

from __future__ import annotations

from typing import Any

from graph.diff import FileDiff, apply_scopes, find_scopes, parse_file
from graph.findings import Anchorer, finding_key, key_of, merge_duplicates, normalize, rank
from graph.github import PRFile
from prreview.demo._patch import parse_patch, unified_patch
from tests.fakes.github._reviews import find_line

BASE = "".join(f"def f{i}(x):\n    a = x + {i}\n    b = a * 2\n    c = b - 1\n    return c\n\n\n"
               for i in range(8))
# f2: a changed line; f6: a removed line; f7: a line added deep enough to get f7's `def` as scope.
HEAD = (BASE.replace("    b = a * 2\n    c = b - 1\n    return c\n\n\ndef f3",
                     "    b = a * 3\n    c = b - 1\n    return c\n\n\ndef f3")
        .replace("def f6(x):\n    a = x + 6\n", "def f6(x):\n")
        .replace("    c = b - 1\n    return c\n\n\n", "    c = b - 1\n    log(c)\n    return c\n\n\n", 8)
        .replace("    log(c)\n", "", 7))


def _diff(path: str, base: str, head: str) -> tuple[FileDiff, str]:
    patch = unified_patch(base, head)
    return parse_file(PRFile(path, "modified", 0, 0, patch)), patch


def _finding(line: int, side: str = "RIGHT", **extra: Any) -> dict[str, Any]:
    raw = {"path": "app.py", "line": line, "side": side, "severity": "major", "category": "bug",
           "title": "Wrong factor", "body": "It should be 2.", **extra}
    normalized = normalize(raw)
    assert normalized is not None
    return normalized


def _github_accepts(patch: str, finding: dict[str, Any]) -> bool:
    """The fake GitHub's own rule for where a comment can go."""
    return find_line(parse_patch(patch), finding["line"], finding["side"]) is not None


DIFF, PATCH = _diff("app.py", BASE, HEAD)
apply_scopes(DIFF, find_scopes(DIFF, HEAD))
ANCHOR = Anchorer({"app.py": DIFF})
ADDED = sorted(DIFF.added_lines())
REMOVED = sorted(n for h in DIFF.hunks for n in h.changed_on("LEFT"))


def test_a_finding_on_a_changed_line_stays_there_with_its_range_and_suggestion() -> None:
    line = ADDED[0]
    end = next(n for n in sorted(DIFF.commentable("RIGHT")) if n > line)
    placed = ANCHOR.anchor(_finding(line, end_line=end, suggestion="    b = a * 2"))
    assert placed is not None
    assert (placed["line"], placed["end_line"], placed["side"]) == (line, end, "RIGHT")
    assert placed["suggestion"] == "    b = a * 2"
    assert _github_accepts(PATCH, placed)


def test_a_finding_on_scope_context_moves_to_the_nearest_changed_line_of_its_hunk() -> None:
    hunk = next(h for h in DIFF.hunks if h.scope)
    scope_line = hunk.scope[0].new
    assert scope_line is not None and scope_line not in DIFF.commentable("RIGHT")
    placed = ANCHOR.anchor(_finding(scope_line, end_line=scope_line + 1, suggestion="fixed()"))
    assert placed is not None
    assert placed["line"] in hunk.changed_on("RIGHT") + hunk.changed_on("LEFT")
    assert "end_line" not in placed and "suggestion" not in placed  # written for other lines
    assert "Suggested code:\n```\nfixed()\n```" in placed["body"]
    assert _github_accepts(PATCH, placed)


def test_a_finding_far_from_every_hunk_is_dropped() -> None:
    far = max(DIFF.commentable("RIGHT")) + 40
    assert ANCHOR.anchor(_finding(far)) is None
    assert ANCHOR.anchor({**_finding(ADDED[0]), "path": "other.py"}) is None


def test_old_side_findings_stay_on_removed_lines() -> None:
    placed = ANCHOR.anchor(_finding(REMOVED[0], side="LEFT"))
    assert placed is not None and placed["side"] == "LEFT" and placed["line"] == REMOVED[0]
    assert _github_accepts(PATCH, placed)


def test_every_anchored_finding_is_accepted_by_github_whatever_line_the_model_names() -> None:
    for line in range(1, len(HEAD.splitlines()) + 5):
        for side in ("RIGHT", "LEFT"):
            placed = ANCHOR.anchor(_finding(line, side=side))
            assert placed is None or _github_accepts(PATCH, placed), (line, side, placed)


def test_incremental_findings_are_placed_on_the_whole_pr_diff() -> None:
    middle = HEAD.replace("    a = x + 2\n", "    a = x + 2\n    trace(a)\n")  # pushed after a review
    pr_diff, pr_patch = _diff("app.py", BASE, middle)
    since, _ = _diff("app.py", HEAD, middle)
    anchor = Anchorer({"app.py": pr_diff}, {"app.py": since}, same_numbers_left=False)
    [new_line] = since.added_lines()
    placed = anchor.anchor(_finding(new_line))
    assert placed is not None and placed["line"] == new_line and _github_accepts(pr_patch, placed)
    # an old-side number of the incremental diff means nothing to GitHub: moved to the new side
    old_line = since.hunks[0].lines[0].old
    assert old_line is not None
    left = anchor.anchor(_finding(old_line, side="LEFT"))
    assert left is not None and left["side"] == "RIGHT" and _github_accepts(pr_patch, left)


def test_weak_model_output_is_read_leniently_but_not_blindly() -> None:
    loose = normalize({"path": "a.py", "line": "R12", "severity": "High", "side": "right",
                       "title": "  Leaks   a handle ", "body": "", "category": None})
    assert loose == {"path": "a.py", "line": 12, "side": "RIGHT", "severity": "major", "category": "general",
                     "title": "Leaks a handle", "body": "Leaks a handle", "source": "model"}
    left = normalize({"path": "a.py", "line": "L7", "severity": "low", "title": "t"})
    assert left is not None and left["side"] == "LEFT"
    for bad in ({"path": "a.py", "line": 0, "severity": "major", "title": "t"},
                {"path": "a.py", "line": 3, "severity": "catastrophic", "title": "t"},
                {"line": 3, "severity": "major", "title": "t"}, "not a dict",
                {"path": "a.py", "line": 3, "severity": "major", "title": "", "body": ""}):
        assert normalize(bad) is None


def test_duplicates_across_groups_and_sources_become_one_finding() -> None:
    model = _finding(10, title="SQL injection through f-string", category="security", severity="critical")
    again = _finding(11, title="SQL injection via f-string", category="security", severity="major")
    ruff = {**_finding(10, title="Possible SQL injection vector (S608)", category="security"),
            "source": "ruff", "severity": "major"}
    other = _finding(10, title="Unused variable", category="style", severity="nit")
    merged = merge_duplicates([again, ruff, model, other])
    assert len(merged) == 2
    top = next(f for f in merged if f["severity"] == "critical")
    assert top["title"] == "SQL injection through f-string"
    assert top["source"] == "model, ruff"
    assert "Also reported by ruff: Possible SQL injection vector (S608)" in top["body"]


def test_ranking_puts_severe_first_and_caps_nits() -> None:
    findings = [_finding(i, severity=s, title=f"t{i}") for i, s in enumerate(
        ["nit", "minor", "critical", "nit", "major", "nit", "nit"], start=1)]
    ranked = rank(findings, max_nits=2, max_findings=30)
    assert [f["severity"] for f in ranked] == ["critical", "major", "minor", "nit", "nit"]
    assert len(rank(findings, max_nits=5, max_findings=3)) == 3


def test_a_finding_keeps_its_key_when_code_above_it_moves() -> None:
    key = finding_key("app.py", "    b = a * 3", "Wrong factor")
    assert key == finding_key("app.py", "b = a * 3 ", "wrong  FACTOR")
    assert key != finding_key("app.py", "    b = a * 3", "Another problem")
    assert key != finding_key("lib.py", "    b = a * 3", "Wrong factor")
    shifted_diff, _ = _diff("app.py", BASE, "# header\n" + HEAD)
    line = ADDED[0]
    assert key_of(_finding(line), {"app.py": DIFF}) == key_of(_finding(line + 1), {"app.py": shifted_diff})
