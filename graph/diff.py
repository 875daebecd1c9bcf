"""Diffs as the model sees them, and the lines GitHub accepts comments on."""

from __future__ import annotations

from dataclasses import dataclass, field

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from graph.github import PRFile


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "+", "-" or " "
    old: int | None
    new: int | None
    text: str


@dataclass
class Hunk:
    header: str
    lines: list[DiffLine]

    def lines_on(self, side: str) -> list[int]:
        if side == "LEFT":
            return [ln.old for ln in self.lines if ln.old is not None]
        return [ln.new for ln in self.lines if ln.new is not None]

    def changed_on(self, side: str) -> list[int]:
        if side == "LEFT":
            return [ln.old for ln in self.lines if ln.kind == "-" and ln.old is not None]
        return [ln.new for ln in self.lines if ln.kind == "+" and ln.new is not None]


@dataclass
class FileDiff:
    path: str
    status: str
    previous_path: str | None
    hunks: list[Hunk] = field(default_factory=list)
    has_patch: bool = True

    def commentable(self, side: str) -> set[int]:
        """Lines a review comment may sit on: every line the diff shows on that side."""
        return {n for hunk in self.hunks for n in hunk.lines_on(side)}


def parse_file(file: PRFile) -> FileDiff:
    diff = FileDiff(file.path, file.status, file.previous_path, has_patch=bool(file.patch))
    if not file.patch:
        return diff
    try:
        patch = PatchSet(f"--- a/{file.path}\n+++ b/{file.path}\n{file.patch}\n")
    except UnidiffParseError:
        diff.has_patch = False
        return diff
    for patched in patch:
        for hunk in patched:
            lines = [DiffLine(ln.line_type, ln.source_line_no, ln.target_line_no, ln.value.rstrip("\n"))
                     for ln in hunk if ln.line_type in ("+", "-", " ")]
            header = f"@@ -{hunk.source_start},{hunk.source_length} +{hunk.target_start},{hunk.target_length} @@"
            if hunk.section_header:
                header += f" {hunk.section_header}"
            diff.hunks.append(Hunk(header, lines))
    return diff


def render_file(diff: FileDiff) -> str:
    """The prompt form of one file: every line tagged with the number a comment must use.

    `R<n>` is the new file's line n (added or context), `L<n>` the old file's line n (removed).
    """
    attrs = f'path="{diff.path}" status="{diff.status}"'
    if diff.previous_path:
        attrs += f' previous_path="{diff.previous_path}"'
    out = [f"<pr_file {attrs}>"]
    for hunk in diff.hunks:
        out.append(hunk.header)
        for ln in hunk.lines:
            tag = f"L{ln.old}" if ln.kind == "-" else f"R{ln.new}"
            out.append(f"{tag:<5}{ln.kind} | {ln.text}")
    out.append("</pr_file>")
    return "\n".join(out)


ANCHOR_SLACK_LINES = 10


def anchor_line(diff: FileDiff, line: int, side: str) -> int | None:
    """`line` if GitHub accepts a comment there; else the nearest changed line of the hunk it
    falls next to (within ANCHOR_SLACK_LINES); else None: the finding cannot be posted."""
    if line in diff.commentable(side):
        return line
    best: int | None = None
    for hunk in diff.hunks:
        shown = hunk.lines_on(side)
        if not shown or not shown[0] - ANCHOR_SLACK_LINES <= line <= shown[-1] + ANCHOR_SLACK_LINES:
            continue
        for candidate in hunk.changed_on(side) or shown:
            if best is None or (abs(candidate - line), candidate) < (abs(best - line), best):
                best = candidate
    return best
