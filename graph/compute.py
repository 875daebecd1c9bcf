"""The CPU-bound parts of the review steps, as functions of plain data, for worker processes.

Parsing diffs, finding enclosing scopes over whole files, tokenizing and packing, anchoring and
merging findings, rendering comments: each grows with what a PR holds, which anyone who can open
a PR chooses. The nodes (`graph.nodes`) run these through `graph.offload` with a hard timeout, so
none of it can stall the agent replica's event loop; a timed-out step degrades the review (and
says so in it) instead of failing it. Arguments and results are picklable plain data.

The fork server imports this module once (`graph.offload.PRELOAD`), so keep its imports to what
the steps need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graph.diff import FileDiff, apply_scopes, find_scopes, parse_file
from graph.findings import Anchorer, key_of, merge_duplicates, normalize, rank
from graph.github import PRFile
from graph.plan import Budget, ReviewGroup, chunk_file, classify, pack, skip_reason
from graph.prompts import group_prompt, guidance, other_changes, scope_note, template
from graph.publish import PlannedComment, plan_comments
from graph.repo_config import RepoConfig
from graph.schemas import MAX_FINDINGS_PER_GROUP
from prreview.models import ReviewOptions

PROMPT_OVERHEAD_TOKENS = 200  # chat template and JSON scaffolding around the prompt text
CONTEXT_MARGIN = 0.05  # share of the context kept free: token counts may be estimates
SUMMARY_RESERVE_TOKENS = 3000  # tokens kept back from the job's budget for the summary

Files = list[dict[str, Any]]  # graph state's file dicts (graph.github.PRFile fields)


def diffs_of(files: Files, scopes: dict[str, list[dict[str, Any]]] | None = None) -> list[FileDiff]:
    return [apply_scopes(parse_file(PRFile(**f)), (scopes or {}).get(f["path"], [])) for f in files]


# --- analyze -------------------------------------------------------------------------------------------
def changed_files(files: Files, config: dict[str, Any]) -> tuple[list[tuple[str, dict[int, str]]], list[str]]:
    """(each readable file's changed lines at head, the paths to review), for the analyzers and
    the scope lines: files with a patch, not removed, not ignored by the repository."""
    repo_config = RepoConfig(**config)
    readable = [d for d in diffs_of(files)
                if d.has_patch and d.status != "removed" and not repo_config.ignored_by(d.path)]
    reviewable = [d.path for d in readable if skip_reason(d, repo_config) is None]
    return [(d.path, d.added_lines()) for d in readable], reviewable


def scopes_for(files: Files, contents: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The enclosing-definition lines above each hunk (graph.diff.find_scopes), per path."""
    return {d.path: found for d in diffs_of(files) if d.path in contents
            and (found := find_scopes(d, contents[d.path]))}


# --- plan ----------------------------------------------------------------------------------------------
def plan_review(files: Files, scopes: dict[str, list[dict[str, Any]]], config: dict[str, Any],
                options: dict[str, Any], pr: dict[str, Any], repo: str, number: int,
                incremental: dict[str, Any] | None, analysis: list[dict[str, Any]], *, context_tokens: int,
                max_completion_tokens: int, max_llm_calls: int, job_max_tokens: int,
                count_tokens: Callable[[str], int]) -> dict[str, Any]:
    """Groups of files for the model within its context and the job's budget (graph.plan), the
    prompt parts they share, and the files left out with their reasons. `pr`: title, body and
    commit messages."""
    repo_config, review_options = RepoConfig(**config), ReviewOptions(**options)
    candidates, skipped = classify(diffs_of(files, scopes), repo_config)
    prompt = {"guidance": guidance(review_options.focus, repo_config.focus, repo_config.instructions),
              "other_changes": other_changes(skipped), "scope_note": scope_note(incremental)}
    empty = group_prompt(repo, number, pr, prompt, "", MAX_FINDINGS_PER_GROUP)
    header = count_tokens(template("system")) + count_tokens(empty) + PROMPT_OVERHEAD_TOKENS
    group_tokens = int(context_tokens * (1 - CONTEXT_MARGIN)) - max_completion_tokens - header
    # Two calls are kept for the summary and a retry; the rest may each review one group.
    budget = Budget(group_tokens=max(group_tokens, 256), max_groups=max(max_llm_calls - 2, 1),
                    call_tokens=header + max_completion_tokens,
                    total_tokens=max(job_max_tokens - SUMMARY_RESERVE_TOKENS, 1) if job_max_tokens else 0)
    evidence: dict[str, list[dict[str, Any]]] = {}
    for finding in analysis:
        evidence.setdefault(finding["path"], []).append(finding)
    result = pack(candidates, budget, count_tokens, evidence)
    groups = _group_refs(result.groups, {d.path: d for d in candidates}, budget.group_tokens, count_tokens,
                         evidence)
    return {"groups": groups, "skipped": skipped + result.skipped,
            "prompt": prompt, "files_total": result.files_total, "group_tokens": budget.group_tokens}


def _group_refs(groups: list[ReviewGroup], diffs: dict[str, FileDiff], budget: int, count_tokens: Callable[[str], int],
                evidence: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The groups as checkpointed: each chunk as (path, part), where part n is the file's n-th chunk
    as `chunk_file` cuts it within `budget`, not its text (rendered again by `chunk_texts`)."""
    counts: dict[str, int] = {}
    for group in groups:
        for chunk in group.chunks:
            counts[chunk.path] = counts.get(chunk.path, 0) + 1
    parts: dict[tuple[str, str], int] = {}  # a file cut in parts: (path, text) -> its part
    for path, count in counts.items():
        if count > 1:
            cut = chunk_file(diffs[path], budget, count_tokens, evidence.get(path, []))
            parts.update(((path, chunk.text), n) for n, chunk in enumerate(cut))
    return [{"index": group.index, "paths": group.paths, "tokens": group.tokens, "budget": budget,
             "completes": [c.path for c in group.chunks if c.last],
             "chunks": [{"path": c.path, "part": parts.get((c.path, c.text), 0), "tokens": c.tokens, "last": c.last}
                        for c in group.chunks]}
            for group in groups]


def chunk_texts(files: Files, scopes: dict[str, list[dict[str, Any]]], evidence: dict[str, list[dict[str, Any]]],
                chunks: list[dict[str, Any]], budget: int, count_tokens: Callable[[str], int]) -> list[str]:
    """The prompt text of each chunk reference of a group (see `_group_refs`): the same text the
    plan measured, from the same files, scope lines and analyzer results."""
    diffs = {d.path: d for d in diffs_of(files, scopes)}
    cut: dict[str, list[str]] = {}
    texts = []
    for chunk in chunks:
        path = chunk["path"]
        if path not in cut:
            cut[path] = [c.text for c in chunk_file(diffs[path], budget, count_tokens, evidence.get(path, []))]
        texts.append(cut[path][chunk["part"]])
    return texts


# --- collect -------------------------------------------------------------------------------------------
def collect_findings(pr_files: Files, review_files: Files, scopes: dict[str, list[dict[str, Any]]],
                     raw: list[dict[str, Any]], config: dict[str, Any], options: dict[str, Any], *,
                     posted: list[str], incremental: bool) -> dict[str, Any]:
    """Model and analyzer findings normalized, anchored on the PR's diff, filtered by the
    repository's thresholds, merged, minus what is already posted on the PR, ranked and capped."""
    repo_config, review_options = RepoConfig(**config), ReviewOptions(**options)
    post = {d.path: d for d in diffs_of(pr_files)}
    shown = {d.path: d for d in diffs_of(review_files, scopes)}
    anchorer = Anchorer(post, shown, same_numbers_left=not incremental)
    normalized = [f for f in map(normalize, raw) if f is not None]
    anchored = [f for f in map(anchorer.anchor, normalized) if f is not None]
    kept = [f for f in anchored if repo_config.keeps(f["severity"]) and not repo_config.ignored_by(f["path"])]
    already = set(posted)
    merged = merge_duplicates(kept)  # before the posted check: what was posted was merged the same way
    fresh = [f for f in merged if key_of(f, post) not in already]
    max_nits = min(review_options.max_nits,
                   repo_config.max_nits if repo_config.max_nits is not None else review_options.max_nits)
    findings = rank(fresh, max_nits=max_nits, max_findings=review_options.max_findings)
    stats = {"proposed": len(raw), "unusable": len(raw) - len(normalized),
             "off_diff": len(normalized) - len(anchored), "below_threshold": len(anchored) - len(kept),
             "merged": len(kept) - len(merged), "already_posted": len(merged) - len(fresh),
             "kept": len(findings)}
    repeated = [{k: f[k] for k in ("path", "line", "severity", "title")} for f in merged if f not in fresh]
    return {"findings": findings, "repeated": repeated, "stats": stats}


# --- publish -------------------------------------------------------------------------------------------
def publication_comments(pr_files: Files, findings: list[dict[str, Any]]) -> list[PlannedComment]:
    """Each finding as the inline comment it becomes (graph.publish.plan_comments)."""
    return plan_comments(findings, {d.path: d for d in diffs_of(pr_files)})
