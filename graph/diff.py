"""Diffs as the model sees them, and the lines GitHub accepts comments on.

A hunk is shown with its own lines (each tagged with the number a comment must use) and, above
it, the unchanged code up to the enclosing function or class ("scope" lines, marked `~`), so the
model reads a change in its context. Scope lines are not part of the diff: no comment may sit
there, and `graph.findings` moves a finding that names one onto a changed line of its hunk.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import re2
from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from graph.github import PRFile
from graph.prompts import neutralize

LANGUAGES = {
    ".py": "python", ".pyi": "python", ".go": "go", ".rs": "rust", ".java": "java", ".kt": "kotlin",
    ".scala": "scala", ".ts": "typescript", ".tsx": "typescript", ".js": "javascript", ".jsx": "javascript",
    ".mjs": "javascript", ".rb": "ruby", ".php": "php", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".hpp": "cpp", ".cs": "csharp", ".swift": "swift", ".sql": "sql", ".sh": "shell", ".bash": "shell",
    ".tf": "terraform", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json", ".md": "markdown",
}
BINARY_EXTENSIONS = {
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz",
    ".7z", ".jar", ".war", ".whl", ".so", ".dll", ".dylib", ".exe", ".bin", ".class", ".pyc", ".o", ".a",
    ".woff", ".woff2", ".ttf", ".otf", ".eot", ".mp3", ".mp4", ".mov", ".avi", ".wav", ".ogg", ".sqlite",
    ".db", ".parquet", ".pkl", ".npy", ".pt", ".onnx",
}
MAX_SCOPE_LINES = 12   # lines shown from the enclosing definition down; the rest becomes a gap marker
MAX_SCOPE_SCAN = 400   # how far above a hunk its enclosing definition is looked for
MAX_DEFINITION_CHARS = 400  # of a line, read to tell whether it opens a definition

# A line that opens a definition: a keyword in most languages, or (brace languages) a C-like
# signature `type name(` whose first word is not a statement keyword. RE2: linear in the line,
# whatever a PR puts in it.
_KEYWORD_DEFINITION = re2.compile(
    r"^\s*(?:@?(?:export|default|public|private|protected|internal|static|final|abstract|async|override|"
    r"virtual|inline|unsafe|extern|sealed|open|pub(?:\([^)]*\))?)\s+)*"
    r"(?:def|class|function|func|fn|struct|enum|trait|impl|interface|module|namespace|object|record)\b")
_C_SIGNATURE = re2.compile(r"^\s*(?P<first>[A-Za-z_]\w*)[\w<>\[\],:*& ]*\s[*&]?[A-Za-z_]\w*\s*\([^;]*$")
_STATEMENTS = frozenset({"return", "else", "if", "while", "for", "switch", "case", "new", "throw", "await",
                         "yield", "delete", "do"})
_INDENT_LANGUAGES = {"python", "ruby", "yaml"}


def is_definition(text: str, language: str | None) -> bool:
    text = text[:MAX_DEFINITION_CHARS]
    if _KEYWORD_DEFINITION.match(text):
        return True
    if language in _INDENT_LANGUAGES:
        return False
    signature = _C_SIGNATURE.match(text)
    return signature is not None and signature.group("first") not in _STATEMENTS


def extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "+", "-", " " (lines of the diff) or "~" (surrounding code, shown for context only)
    old: int | None
    new: int | None
    text: str


@dataclass
class Hunk:
    header: str
    lines: list[DiffLine]
    scope: list[DiffLine] = field(default_factory=list)  # unchanged code above, from its definition down
    scope_gap: int = 0  # unchanged lines left out between `scope` and `lines`
    part: str = ""  # "part 2/3" when a long hunk is cut to fit the model's context
    old_offset: int | None = None  # old line number minus new line number above the hunk

    def lines_on(self, side: str) -> list[int]:
        """Lines of this hunk a comment may sit on: those the diff shows on that side."""
        if side == "LEFT":
            return [ln.old for ln in self.lines if ln.old is not None]
        return [ln.new for ln in self.lines if ln.new is not None]

    def changed_on(self, side: str) -> list[int]:
        if side == "LEFT":
            return [ln.old for ln in self.lines if ln.kind == "-" and ln.old is not None]
        return [ln.new for ln in self.lines if ln.kind == "+" and ln.new is not None]

    def shown_range(self, side: str) -> tuple[int, int] | None:
        """First and last line number the model saw for this hunk on `side`, scope included."""
        numbers = [(ln.old if side == "LEFT" else ln.new) for ln in self.scope + self.lines]
        present = [n for n in numbers if n is not None]
        return (min(present), max(present)) if present else None


@dataclass
class FileDiff:
    path: str
    status: str
    previous_path: str | None
    hunks: list[Hunk] = field(default_factory=list)
    has_patch: bool = True
    additions: int = 0
    deletions: int = 0

    def commentable(self, side: str) -> set[int]:
        """Lines a review comment may sit on: every line the diff shows on that side."""
        return {n for hunk in self.hunks for n in hunk.lines_on(side)}

    def added_lines(self) -> dict[int, str]:
        return {ln.new: ln.text for hunk in self.hunks for ln in hunk.lines if ln.kind == "+" and ln.new}

    def line_text(self, line: int, side: str) -> str | None:
        for hunk in self.hunks:
            for ln in hunk.lines:
                if (ln.old if side == "LEFT" else ln.new) == line:
                    return ln.text
        return None

    @property
    def binary(self) -> bool:
        """GitHub sends no patch for binary files; an unchanged line count tells them from big ones."""
        if self.has_patch:
            return False
        return extension(self.path) in BINARY_EXTENSIONS or (self.additions == 0 and self.deletions == 0
                                                             and self.status != "renamed")

    @property
    def language(self) -> str | None:
        return LANGUAGES.get(extension(self.path))

    def with_hunks(self, hunks: list[Hunk]) -> FileDiff:
        """The same file with other hunks (a part of it, for the prompt)."""
        return FileDiff(self.path, self.status, self.previous_path, hunks, self.has_patch, self.additions,
                        self.deletions)


def parse_file(file: PRFile) -> FileDiff:
    diff = FileDiff(file.path, file.status, file.previous_path, has_patch=bool(file.patch),
                    additions=file.additions, deletions=file.deletions)
    if not file.patch:
        return diff
    try:
        patch = PatchSet(f"--- a/{file.path}\n+++ b/{file.path}\n{file.patch}\n")
    except UnidiffParseError:
        diff.has_patch = False
        return diff
    for patched in patch:
        for hunk in patched:
            lines = [DiffLine(ln.line_type, ln.source_line_no, ln.target_line_no, ln.value.rstrip("\r\n"))
                     for ln in hunk if ln.line_type in ("+", "-", " ")]
            header = (f"@@ -{hunk.source_start},{hunk.source_length} "
                      f"+{hunk.target_start},{hunk.target_length} @@")
            if hunk.section_header:
                header += f" {hunk.section_header.strip()}"
            # git numbers an empty old range from the line before it
            offset = hunk.source_start + (0 if hunk.source_length else 1) - hunk.target_start
            diff.hunks.append(Hunk(header, lines, old_offset=offset))
    return diff


# --- enclosing scopes ---------------------------------------------------------------------------
def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" \t"))


def find_scopes(diff: FileDiff, head_text: str) -> list[dict[str, Any]]:
    """For each hunk whose change sits inside a definition that starts above the hunk: the
    definition's first lines at the head commit, as `{"hunk", "start", "lines", "gap"}` (plain data,
    kept in the graph state). `head_text` is the file at the commit the diff leads to."""
    head = head_text.splitlines()
    scopes: list[dict[str, Any]] = []
    previous_end = 0
    for index, hunk in enumerate(diff.hunks):
        shown = [ln.new for ln in hunk.lines if ln.new is not None]
        position = next((i for i, ln in enumerate(hunk.lines) if ln.kind in "+-"), None)
        if not shown or position is None:
            continue
        start, first_changed = shown[0], hunk.lines[position]
        # where the change is on the new side: an added line's number, or just below the
        # unchanged lines before a removal
        before = [ln.new for ln in hunk.lines[:position] if ln.new is not None]
        anchor = first_changed.new or (before[-1] + 1 if before else start)
        reference = _indent(first_changed.text)
        found: int | None = None
        floor = max(previous_end + 1, anchor - MAX_SCOPE_SCAN, 1)
        for number in range(min(anchor - 1, len(head)), floor - 1, -1):
            text = head[number - 1]
            if not text.strip() or _indent(text) >= reference:
                continue
            if is_definition(text, diff.language):
                found = number
                break
            if _indent(text) == 0 and not text.startswith(("#", "//", "/*", "*", "@", ")", "]")):
                break  # top-level code in between: the change is not inside a definition above
        previous_end = shown[-1]
        if found is None or found >= start:
            continue  # no enclosing definition, or the hunk already shows it
        numbers = list(range(found, start))
        kept = numbers[:MAX_SCOPE_LINES]
        scopes.append({"hunk": index, "start": found, "lines": [head[n - 1] for n in kept],
                       "gap": len(numbers) - len(kept)})
    return scopes


def apply_scopes(diff: FileDiff, scopes: list[dict[str, Any]]) -> FileDiff:
    """Attach scope lines (from `find_scopes`) to their hunks; old-side numbers follow the hunk's offset."""
    for scope in scopes:
        if not 0 <= scope["hunk"] < len(diff.hunks):
            continue
        hunk = diff.hunks[scope["hunk"]]
        offset = hunk.old_offset
        hunk.scope = [DiffLine("~", scope["start"] + i + offset if offset is not None else None,
                               scope["start"] + i, text) for i, text in enumerate(scope["lines"])]
        hunk.scope_gap = int(scope["gap"])
    return diff


# --- the prompt form ------------------------------------------------------------------------------
def _tagged(ln: DiffLine) -> str:
    tag = f"L{ln.old}" if ln.kind == "-" else f"R{ln.new}"
    return f"{tag:<6}{ln.kind} | {neutralize(ln.text)}"


def file_attributes(diff: FileDiff) -> str:
    attrs = f'path="{html.escape(diff.path)}" status="{diff.status}"'
    if diff.previous_path and diff.previous_path != diff.path:
        attrs += f' previous_path="{html.escape(diff.previous_path)}"'
    if diff.language:
        attrs += f' language="{diff.language}"'
    return attrs


def render_file(diff: FileDiff) -> str:
    """The prompt form of one file: every line tagged with the number a comment must use.

    `R<n>` is the new file's line n (added `+`, unchanged ` `, or context `~`), `L<n>` the old
    file's line n (removed `-`).
    """
    out = [f"<pr_file {file_attributes(diff)}>"]
    for hunk in diff.hunks:
        out.append(hunk.header + (f" ({hunk.part})" if hunk.part else ""))
        out += [_tagged(ln) for ln in hunk.scope]
        if hunk.scope_gap:
            out.append(f"{'':<6}⋮ | ({hunk.scope_gap} unchanged lines not shown)")
        out += [_tagged(ln) for ln in hunk.lines]
    out.append("</pr_file>")
    return "\n".join(out)


def render_lines(lines: list[DiffLine]) -> list[str]:
    """Tagged lines, for callers that cut a hunk into parts (see graph.plan)."""
    return [_tagged(ln) for ln in lines]
