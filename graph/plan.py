"""Which files get reviewed, in which groups, within the model's context budget.

Nothing is dropped silently: every file not reviewed is returned with its reason.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from graph.diff import FileDiff, Hunk, render_file

SOURCE_EXTENSIONS = {
    ".py", ".go", ".rs", ".java", ".kt", ".scala", ".ts", ".tsx", ".js", ".jsx", ".rb", ".php", ".c", ".h",
    ".cc", ".cpp", ".hpp", ".cs", ".swift", ".sql", ".sh", ".tf", ".yaml", ".yml", ".toml", ".json",
}
SKIP_PATTERNS: dict[str, str] = {
    "*.lock": "lock file", "package-lock.json": "lock file", "*/package-lock.json": "lock file",
    "yarn.lock": "lock file", "poetry.lock": "lock file", "go.sum": "lock file", "Cargo.lock": "lock file",
    "*.min.js": "minified file", "*.min.css": "minified file", "vendor/*": "vendored code",
    "*/vendor/*": "vendored code", "node_modules/*": "vendored code", "*_pb2.py": "generated code",
    "*.pb.go": "generated code", "*.generated.*": "generated code", "dist/*": "build output",
}


@dataclass
class ReviewGroup:
    index: int
    paths: list[str]
    text: str
    tokens: int


@dataclass
class Plan:
    groups: list[ReviewGroup] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def files_total(self) -> int:
        return len({p for g in self.groups for p in g.paths})


def skip_reason(diff: FileDiff, ignore_globs: list[str]) -> str | None:
    for pattern in ignore_globs:
        if fnmatch.fnmatch(diff.path, pattern):
            return f"ignored by repository instructions ({pattern})"
    for pattern, reason in SKIP_PATTERNS.items():
        if fnmatch.fnmatch(diff.path, pattern):
            return reason
    if diff.status == "removed":
        return "file deleted: no new code to review"
    if not diff.has_patch:
        return "binary file, or GitHub sent no patch (file too large)"
    if not diff.hunks:
        return "no textual change (rename or mode change only)"
    return None


def risk_rank(diff: FileDiff) -> tuple[int, int]:
    """Sort key: source files first, then the biggest changes."""
    ext = "." + diff.path.rsplit(".", 1)[-1] if "." in diff.path else ""
    is_test = "test" in diff.path.lower()
    changed = sum(len(h.changed_on("RIGHT")) + len(h.changed_on("LEFT")) for h in diff.hunks)
    tier = 0 if ext in SOURCE_EXTENSIONS and not is_test else 1 if ext in SOURCE_EXTENSIONS else 2
    return (tier, -changed)


def _chunks(diff: FileDiff, budget: int, count: Callable[[str], int]) -> list[tuple[str, int]]:
    """Render a file whole, or split by hunks when it alone exceeds the budget."""
    whole = render_file(diff)
    size = count(whole)
    if size <= budget:
        return [(whole, size)]
    chunks: list[tuple[str, int]] = []
    current: list[Hunk] = []
    for hunk in diff.hunks:
        trial = render_file(FileDiff(diff.path, diff.status, diff.previous_path, current + [hunk]))
        if current and count(trial) > budget:
            text = render_file(FileDiff(diff.path, diff.status, diff.previous_path, current))
            chunks.append((text, count(text)))
            current = [hunk]
        else:
            current.append(hunk)
    if current:
        text = render_file(FileDiff(diff.path, diff.status, diff.previous_path, current))
        chunks.append((text, count(text)))
    return chunks


def plan_review(diffs: list[FileDiff], *, budget_tokens: int, max_groups: int,
                count_tokens: Callable[[str], int], ignore_globs: list[str] | None = None) -> Plan:
    """Pack reviewable files, riskiest first, into groups of at most `budget_tokens` each."""
    plan = Plan()
    candidates: list[FileDiff] = []
    for diff in diffs:
        reason = skip_reason(diff, ignore_globs or [])
        if reason:
            plan.skipped.append({"path": diff.path, "reason": reason})
        else:
            candidates.append(diff)
    candidates.sort(key=risk_rank)

    open_paths: list[str] = []
    open_texts: list[str] = []
    open_tokens = 0

    def close_group() -> None:
        nonlocal open_paths, open_texts, open_tokens
        if open_texts:
            plan.groups.append(ReviewGroup(len(plan.groups), open_paths, "\n\n".join(open_texts), open_tokens))
        open_paths, open_texts, open_tokens = [], [], 0

    for position, diff in enumerate(candidates):
        pieces = _chunks(diff, budget_tokens, count_tokens)
        oversized = [tokens for _, tokens in pieces if tokens > budget_tokens]
        if oversized:
            plan.skipped.append({"path": diff.path,
                                 "reason": f"a single hunk needs {max(oversized)} tokens, over the "
                                           f"{budget_tokens}-token context budget"})
            continue
        for text, tokens in pieces:
            if open_tokens + tokens > budget_tokens:
                close_group()
            if len(plan.groups) >= max_groups:
                for later in candidates[position:]:
                    plan.skipped.append({"path": later.path,
                                         "reason": f"over the review's budget of {max_groups} LLM calls"})
                return plan
            if diff.path not in open_paths:
                open_paths.append(diff.path)
            open_texts.append(text)
            open_tokens += tokens
    close_group()
    return plan
