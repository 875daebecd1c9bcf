"""Findings from the model and the analyzers: normalised, anchored where GitHub accepts a comment,
merged across groups and sources, filtered by the repository's thresholds, and ranked.

Two diffs are involved. The *review* diff is what the model saw (the PR's diff, or in an
incremental review the changes since the last reviewed head), with scope lines above its hunks.
The *post* diff is the PR's whole diff: GitHub accepts a comment only on a line it shows. A
finding is kept at its line when both agree, else moved to the nearest line of the same hunk that
GitHub accepts (a changed one when possible), else dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from graph.diff import FileDiff, Hunk
from prreview.models import SEVERITY_ORDER

SEVERITY_ALIASES = {
    "critical": "critical", "blocker": "critical", "severe": "critical", "security": "critical",
    "major": "major", "high": "major", "error": "major", "bug": "major",
    "minor": "minor", "medium": "minor", "moderate": "minor", "warning": "minor", "warn": "minor",
    "nit": "nit", "low": "nit", "info": "nit", "style": "nit", "trivial": "nit", "suggestion": "nit",
}
ANCHOR_SLACK_LINES = 3  # a line this close past a hunk's shown lines still belongs to it
MERGE_DISTANCE = 2  # findings this close, on the same problem, are one finding
_LINE_NUMBER = re.compile(r"^\s*[RL]?(\d+)\s*$", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _LINE_NUMBER.match(value)
        return int(match.group(1)) if match else None
    return None


def normalize(raw: Any) -> dict[str, Any] | None:
    """A finding in the API's shape from what a model (or analyzer) returned, or None if unusable.

    Lenient where weak models slip (`"line": "R12"`, `"severity": "High"`, `"side": "right"`),
    strict where it matters: a path, a positive line and a known severity are required.
    """
    if not isinstance(raw, dict):
        return None
    path = raw.get("path")
    severity = SEVERITY_ALIASES.get(str(raw.get("severity") or "").strip().lower())
    line = _int(raw.get("line"))
    if not isinstance(path, str) or not path or severity is None or line is None or line < 1:
        return None
    side = "LEFT" if str(raw.get("side") or "").upper() == "LEFT" else "RIGHT"
    if isinstance(raw.get("line"), str) and raw["line"].strip().upper().startswith("L"):
        side = "LEFT"
    title = " ".join(str(raw.get("title") or "").split())[:120]
    body = str(raw.get("body") or "").strip()[:2000]
    if not title and not body:
        return None
    finding: dict[str, Any] = {
        "path": path, "line": line, "side": side, "severity": severity,
        "category": (" ".join(str(raw.get("category") or "").split())[:40] or "general").lower(),
        "title": title or body.split(". ")[0][:120], "body": body or title,
        "source": str(raw.get("source") or "model"),
    }
    end_line = _int(raw.get("end_line"))
    if end_line is not None and end_line > line:
        finding["end_line"] = end_line
    suggestion = raw.get("suggestion")
    if isinstance(suggestion, str) and suggestion.strip():
        finding["suggestion"] = suggestion.rstrip("\n")
    return finding


def _number(line: Any, side: str) -> int | None:
    return line.old if side == "LEFT" else line.new


def _containing_hunk(diff: FileDiff, line: int, side: str) -> Hunk | None:
    best: tuple[int, Hunk] | None = None
    for hunk in diff.hunks:
        shown = hunk.shown_range(side)
        if shown is None:
            continue
        first, last = shown
        distance = 0 if first <= line <= last else min(abs(line - first), abs(line - last))
        if distance <= ANCHOR_SLACK_LINES and (best is None or distance < best[0]):
            best = (distance, hunk)
    return best[1] if best else None


def _position(hunk: Hunk, line: int, side: str) -> float:
    """Where `line` sits among the hunk's shown lines (scope first), for distances within a hunk."""
    shown = hunk.scope + hunk.lines
    numbered = [(i, _number(ln, side)) for i, ln in enumerate(shown) if _number(ln, side) is not None]
    for index, number in numbered:
        if number == line:
            return index
    before = [i for i, n in numbered if n is not None and n < line]
    return (before[-1] + 0.5) if before else -1


@dataclass
class Anchorer:
    """Places findings on lines GitHub accepts. `post` is the PR's diff; `review` what the model saw
    (defaults to `post`). `same_numbers_left`: old-side numbers of both diffs count from the same
    base (false in an incremental review, whose old side is the last reviewed head)."""

    post: dict[str, FileDiff]
    review: dict[str, FileDiff] = field(default_factory=dict)
    same_numbers_left: bool = True
    _accepts: dict[tuple[str, str], set[int]] = field(default_factory=dict)

    def accepts(self, path: str, side: str) -> set[int]:
        key = (path, side)
        if key not in self._accepts:
            diff = self.post.get(path)
            self._accepts[key] = diff.commentable(side) if diff else set()
        return self._accepts[key]

    def anchor(self, finding: dict[str, Any]) -> dict[str, Any] | None:
        path, line, side = finding["path"], finding["line"], finding["side"]
        shown = self.review.get(path) or self.post.get(path)
        if shown is None or not self.accepts(path, "RIGHT") | self.accepts(path, "LEFT"):
            return None
        hunk = _containing_hunk(shown, line, side)
        if hunk is None:
            return None
        sides = [side] if side == "RIGHT" or self.same_numbers_left else []
        if side == "LEFT":
            sides.append("RIGHT")  # an old-side line GitHub cannot take: the new side of the same hunk
        if side in sides and line in hunk.lines_on(side) and line in self.accepts(path, side):
            return self._finish(finding, hunk, line, side, moved=False)
        position = _position(hunk, line, side)
        offset = len(hunk.scope)
        for target_side in sides:
            accepted = self.accepts(path, target_side)
            candidates = [(offset + i, n) for i, ln in enumerate(hunk.lines)
                          if (n := _number(ln, target_side)) is not None and n in accepted]
            changed = [(p, n) for p, n in candidates if hunk.lines[p - offset].kind in "+-"]
            pool = changed or candidates
            if pool:
                _, chosen = min(pool, key=lambda item: (abs(item[0] - position), item[0]))
                return self._finish(finding, hunk, chosen, target_side, moved=True)
        return None

    def _finish(self, finding: dict[str, Any], hunk: Hunk, line: int, side: str, *,
                moved: bool) -> dict[str, Any]:
        placed = {k: v for k, v in finding.items() if k != "end_line"}
        placed["line"], placed["side"] = line, side
        end_line = finding.get("end_line")
        if (not moved and end_line and end_line > line and end_line in hunk.lines_on(side)
                and end_line in self.accepts(finding["path"], side)):
            placed["end_line"] = end_line
        suggestion = placed.pop("suggestion", None)
        if suggestion and side == "RIGHT" and not moved:
            placed["suggestion"] = suggestion
        elif suggestion:  # it was written for other lines: keep it as advice, never as a one-click fix
            placed["body"] = f"{placed['body']}\n\nSuggested code:\n```\n{suggestion}\n```"
        return placed


# --- merging and ranking ------------------------------------------------------------------------
def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _similar(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["path"] != b["path"] or a["side"] != b["side"] or abs(a["line"] - b["line"]) > MERGE_DISTANCE:
        return False
    wa, wb = _words(a["title"]), _words(b["title"])
    overlap = len(wa & wb) / max(len(wa | wb), 1)
    return overlap >= 0.5 or (a["line"] == b["line"] and a["category"] == b["category"])


def _sources(finding: dict[str, Any]) -> list[str]:
    return [s.strip() for s in finding["source"].split(",") if s.strip()]


def _merge_into(kept: dict[str, Any], other: dict[str, Any]) -> None:
    """`kept` is at least as severe as `other` (merge_duplicates goes most severe first)."""
    sources = _sources(kept)
    new_sources = [s for s in _sources(other) if s not in sources]
    if new_sources and other["source"] != "model":
        kept["body"] = f"{kept['body']}\n\nAlso reported by {other['source']}: {other['title']}"
    kept["source"] = ", ".join(sources + new_sources)
    if not kept.get("suggestion") and other.get("suggestion") and other["line"] == kept["line"]:
        kept["suggestion"] = other["suggestion"]


def merge_duplicates(findings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One finding per problem: the same issue found by two groups, or by the model and an analyzer."""
    merged: list[dict[str, Any]] = []
    ordered = sorted(findings, key=lambda f: (SEVERITY_ORDER[f["severity"]], f["source"] == "model"))
    for finding in ordered:
        twin = next((kept for kept in merged if _similar(kept, finding)), None)
        if twin is None:
            merged.append(dict(finding))
        else:
            _merge_into(twin, finding)
    return merged


def rank(findings: Iterable[dict[str, Any]], *, max_nits: int, max_findings: int) -> list[dict[str, Any]]:
    """Most severe first (analyzer-backed ones first within a severity); nits capped."""
    ordered = sorted(findings, key=lambda f: (SEVERITY_ORDER[f["severity"]], f["source"] == "model",
                                              f["path"], f["line"]))
    nits = [f for f in ordered if f["severity"] == "nit"][:max_nits]
    return ([f for f in ordered if f["severity"] != "nit"] + nits)[:max_findings]


def finding_key(path: str, line_text: str | None, title: str) -> str:
    """What identifies a finding across pushes: its file, the code it is on, and what it says
    (line numbers move when code above changes; the code line and the title do not)."""
    normalized = " ".join((line_text or "").split()) + "\0" + " ".join(sorted(_words(title)))
    return hashlib.sha1(f"{path}\0{normalized}".encode()).hexdigest()[:16]


def key_of(finding: dict[str, Any], diffs: dict[str, FileDiff]) -> str:
    diff = diffs.get(finding["path"])
    text = diff.line_text(finding["line"], finding["side"]) if diff else None
    return finding_key(finding["path"], text, finding["title"])
