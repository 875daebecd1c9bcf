"""GitHub's `patch` field, computed from two file versions, and the numbered lines of a patch."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from difflib import SequenceMatcher

NO_NEWLINE = "\\ No newline at end of file"
# git's default "funcname" rule: the hunk header repeats the last line before the hunk that
# starts with a letter, `_` or `$` (a def, a class, a top-level statement).
_FUNCNAME = re.compile(r"^[A-Za-z_$]")
_FUNCNAME_MAX = 80
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def git_blob_sha(data: bytes) -> str:
    """The sha git (and GitHub's `sha` fields) gives a file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _range(start: int, length: int) -> str:
    # Same as git: a one-line range has no length, an empty range starts one line earlier.
    first = start + 1
    if length == 1:
        return str(first)
    if length == 0:
        first -= 1
    return f"{first},{length}"


def _funcname(lines: list[str], before: int) -> str:
    for index in range(before - 1, -1, -1):
        if _FUNCNAME.match(lines[index]):
            return lines[index].rstrip()[:_FUNCNAME_MAX].rstrip()
    return ""


def _emit(out: list[str], marker: str, line: str) -> None:
    out.append(marker + line.rstrip("\n").removesuffix("\r"))
    if not line.endswith("\n"):
        out.append(NO_NEWLINE)


def unified_patch(base: str, head: str, context: int = 3) -> str:
    """The hunks of `git diff -U3` from base to head, as GitHub's `patch`: no ---/+++ header, no
    trailing newline, `\\ No newline at end of file` markers where git writes them."""
    old = base.splitlines(keepends=True)
    new = head.splitlines(keepends=True)
    out: list[str] = []
    # autojunk off: with it difflib treats frequent lines of long files as noise and emits odd hunks.
    for group in SequenceMatcher(None, old, new, autojunk=False).get_grouped_opcodes(context):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        header = f"@@ -{_range(i1, i2 - i1)} +{_range(j1, j2 - j1)} @@"
        func = _funcname(old, i1)
        out.append(f"{header} {func}" if func else header)
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                for line in old[a1:a2]:
                    _emit(out, " ", line)
                continue
            for line in old[a1:a2]:
                _emit(out, "-", line)
            for line in new[b1:b2]:
                _emit(out, "+", line)
    return "\n".join(out)


@dataclass(frozen=True)
class PatchLine:
    """One line of a patch, with the numbers GitHub's review API uses for it."""

    kind: str  # "+", "-", " "
    old_line: int | None
    new_line: int | None
    position: int  # GitHub's `position`: index in the patch, the first @@ line being 0
    hunk: int  # index of the hunk (0-based)
    hunk_start: int  # position of the hunk's @@ line


def parse_patch(patch: str) -> list[PatchLine]:
    lines: list[PatchLine] = []
    old = new = 0
    hunk = -1
    hunk_start = 0
    for position, text in enumerate(patch.split("\n")):
        header = _HUNK_HEADER.match(text)
        if header:
            old, new = int(header.group(1)), int(header.group(3))
            hunk += 1
            hunk_start = position
        elif hunk < 0 or text.startswith("\\"):
            continue
        elif text.startswith("+"):
            lines.append(PatchLine("+", None, new, position, hunk, hunk_start))
            new += 1
        elif text.startswith("-"):
            lines.append(PatchLine("-", old, None, position, hunk, hunk_start))
            old += 1
        else:
            lines.append(PatchLine(" ", old, new, position, hunk, hunk_start))
            old += 1
            new += 1
    return lines


def count_changes(patch: str) -> tuple[int, int]:
    """(additions, deletions) of a patch."""
    additions = deletions = 0
    for line in parse_patch(patch):
        additions += line.kind == "+"
        deletions += line.kind == "-"
    return additions, deletions
