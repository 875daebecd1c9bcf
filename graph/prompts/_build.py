"""The prompts, filled in: PR text always passes through `as_data`, so it stays inside its tags."""

from __future__ import annotations

from typing import Any

from graph.prompts._text import as_data, neutralize, template

MAX_OTHER_CHANGES = 30
MAX_LISTED_FILES = 60


def guidance(focus: str | None, repo_focus: str | None, repo_instructions: str | None) -> str:
    """What the operator (the job's `focus`) and the repository's maintainers ask reviewers to do."""
    parts = []
    if focus:
        parts.append(f"Reviewer focus requested by the operator: {neutralize(focus)}")
    if repo_focus:
        parts.append(f"Reviewer focus set by the repository's maintainers: {neutralize(repo_focus)}")
    if repo_instructions:
        parts.append(f"<pr_repo_instructions>\n{as_data(repo_instructions, 3000)}\n</pr_repo_instructions>")
    return "\n".join(parts) + ("\n" if parts else "")


def other_changes(skipped: list[dict[str, str]]) -> str:
    """Changes of the PR the groups do not show (deleted, renamed, binary, ignored files)."""
    if not skipped:
        return ""
    lines = [f"- {neutralize(s['path'])}: {s['reason']}" for s in skipped[:MAX_OTHER_CHANGES]]
    if len(skipped) > MAX_OTHER_CHANGES:
        lines.append(f"- and {len(skipped) - MAX_OTHER_CHANGES} more")
    return ("<pr_other_changes>\nAlso changed by this PR, not shown below:\n" + "\n".join(lines)
            + "\n</pr_other_changes>\n")


def scope_note(incremental: dict[str, Any] | None) -> str:
    if not incremental:
        return ""
    return (f" Only the changes pushed since the last review (commit {incremental['since'][:12]}) are shown;"
            " the rest of the PR was reviewed before.")


def group_prompt(repo: str, number: int, pr: dict[str, Any], context: dict[str, str], diff: str,
                 max_findings: int) -> str:
    """One group's prompt, ordered for the model server's prefix cache: what every review sends (the
    instructions) first, then what every group of this review shares (the PR's text, `context`),
    and the group's own diff last. Everything before `diff` is byte-identical across the groups of a
    review, so the server computes it once (bench/prefix_cache.py measures the hits)."""
    return template("group_review").format(
        repo=repo, number=number, scope_note=context.get("scope_note", ""),
        guidance=context.get("guidance", ""),
        title=as_data(pr["title"], 300), description=as_data(pr["body"], 3000),
        commits=as_data("\n".join(pr["commit_messages"][-20:]), 2000),
        other_changes=context.get("other_changes", ""), diff=diff, max_findings=max_findings)


def _listing(paths: list[str]) -> str:
    shown = ", ".join(neutralize(p) for p in paths[:MAX_LISTED_FILES])
    more = len(paths) - MAX_LISTED_FILES
    return (shown + (f", and {more} more" if more > 0 else "")) or "none"


def skipped_summary(skipped: list[dict[str, str]], limit: int = 5) -> str:
    """Files not reviewed, grouped by reason: `2 binary file (a.png, b.png); 1 lock file (...)`."""
    by_reason: dict[str, list[str]] = {}
    for item in skipped:
        by_reason.setdefault(item["reason"], []).append(item["path"])
    parts = []
    for reason, paths in by_reason.items():
        names = ", ".join(paths[:limit]) + (f", +{len(paths) - limit} more" if len(paths) > limit else "")
        parts.append(f"{len(paths)} × {reason} ({names})")
    return "; ".join(parts)


def summary_prompt(repo: str, number: int, pr: dict[str, Any], *, incremental: dict[str, Any] | None,
                   reviewed: list[str], skipped: list[dict[str, str]], analyzers: list[dict[str, Any]],
                   findings: list[dict[str, Any]]) -> str:
    tools = "; ".join(f"{a['name']}: {a['status']}, {a['kept']} result(s) on changed lines"
                      for a in analyzers)
    return template("summary").format(
        repo=repo, number=number, scope_note=scope_note(incremental), title=as_data(pr["title"], 300),
        description=as_data(pr["body"], 1500), reviewed_count=len(reviewed),
        files_reviewed=_listing(reviewed),
        skipped_count=len(skipped), files_skipped=neutralize(skipped_summary(skipped)) or "none",
        analyzers=tools or "none",
        findings="\n".join(f"- [{f['severity']}] {f['path']}:{f['line']} {neutralize(f['title'])}"
                           for f in findings[:40]) or "none")
