"""The review graph's steps. Each reads the state, does one thing, and reports progress."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import Send

from graph.analyzers import SourceFile, run_analyzers
from graph.context import ReviewContext
from graph.diff import FileDiff, apply_scopes, find_scopes, parse_file
from graph.findings import Anchorer, key_of, merge_duplicates, normalize, rank
from graph.github import PRFile
from graph.plan import Budget, classify, pack, skip_reason
from graph.prompts import (
    group_prompt,
    guidance,
    other_changes,
    scope_note,
    skipped_summary,
    summary_prompt,
    template,
)
from graph.publish import PriorReview, find_prior, publish_review
from graph.repo_config import RepoConfig, load_repo_config
from graph.schemas import MAX_FINDINGS_PER_GROUP, SUMMARY_SCHEMA, group_review_schema
from graph.state import GroupTask, ReviewState
from prreview.errors import (
    BudgetExceeded,
    GitHubError,
    GitHubRateLimited,
    GitHubTransient,
    LLMBadOutput,
    LLMError,
    LLMTimeout,
)
from prreview.models import SEVERITY_ORDER, ReviewOptions
from prreview.urls import PRRef

log = logging.getLogger(__name__)

PROMPT_OVERHEAD_TOKENS = 200  # chat template and JSON scaffolding around the prompt text
CONTEXT_MARGIN = 0.05  # share of the context kept free: token counts may be estimates
SUMMARY_RESERVE_TOKENS = 3000  # tokens kept back from the job's budget for the summary
MAX_CONTENT_FILES = 500  # files fetched whole (for analyzers and scopes) in one review
REPAIR_NOTE = ("\n\nYour previous answer was not valid JSON. Answer again with only the JSON object the "
               "schema asks for, nothing before or after it.")


def _ref(state: ReviewState | GroupTask) -> PRRef:
    owner, repo = state["repo"].split("/", 1)
    return PRRef(owner, repo, state["number"])


def _diffs(files: list[dict[str, Any]],
           scopes: dict[str, list[dict[str, Any]]] | None = None) -> list[FileDiff]:
    return [apply_scopes(parse_file(PRFile(**f)), (scopes or {}).get(f["path"], [])) for f in files]


def _review_files(state: ReviewState) -> list[dict[str, Any]]:
    """The files the model reviews: the changes since the last review, else the PR's files."""
    files = state.get("review_files")
    return files if files is not None else state["pr"]["files"]


def _options(state: ReviewState | GroupTask) -> ReviewOptions:
    return ReviewOptions(**state.get("options", {}))


# --- gathering --------------------------------------------------------------------------------------
async def fetch_pr(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    ctx = runtime.context
    await ctx.progress.emit("step", {"step": "fetch"}, progress={"step": "fetch"})
    pr = await ctx.github.pull_request(_ref(state))
    await ctx.progress.head_sha(pr.head_sha)
    data = dataclasses.asdict(pr)
    data.pop("ref")
    await ctx.progress.emit("fetched", {"head_sha": pr.head_sha, "files": len(pr.files)})
    return {"pr": data}


async def prepare(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    """The repository's instructions, and, when publishing, what was published before: a PR
    reviewed at an earlier head gets only the changes pushed since."""
    ctx, pr, ref = runtime.context, state["pr"], _ref(state)
    config = await load_repo_config(ctx.github, ref, pr["base_sha"])
    prior: PriorReview | None = None
    incremental: dict[str, Any] | None = None
    review_files: list[dict[str, Any]] | None = None  # None: the PR's own files (not stored twice)
    if _options(state).post:
        prior = await find_prior(ctx.github, ref, pr.get("commit_shas", []))
        if prior is not None:
            incremental, since_files = await _changes_since(ctx, ref, prior, pr)
            if incremental is not None:
                review_files = since_files
    await ctx.progress.emit("prepared", {"repo_config": config.sources, "notes": config.notes,
                                         "incremental": incremental})
    return {"config": config.model_dump(), "prior": prior.to_dict() if prior else None,
            "incremental": incremental, "review_files": review_files}


async def _changes_since(ctx: ReviewContext, ref: PRRef, prior: PriorReview,
                         pr: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(incremental info, files changed since the prior head) when the PR only moved forward."""
    if prior.head_sha == pr["head_sha"]:
        return None, []
    try:
        comparison = await ctx.github.compare(ref, prior.head_sha, pr["head_sha"])
    except (GitHubTransient, GitHubRateLimited):
        raise
    except GitHubError as exc:  # the old head is gone (force-push, GC): review everything again
        log.info("no incremental review of %s: %s", ref.full_name, exc)
        return None, []
    if comparison.status != "ahead" or comparison.truncated:
        return None, []
    in_pr = {f["path"] for f in pr["files"]}
    files = [dataclasses.asdict(f) for f in comparison.files if f.path in in_pr]
    return {"since": prior.head_sha, "previous_review_id": prior.review_id,
            "files_changed": len(files), "files_in_pr": len(pr["files"])}, files


async def _contents(ctx: ReviewContext, ref: PRRef, sha: str, paths: list[str]) -> dict[str, str]:
    """Head contents of `paths` as text (binary, missing and over-large files are left out)."""
    gate = asyncio.Semaphore(ctx.content_concurrency)

    async def one(path: str) -> tuple[str, str | None]:
        async with gate:
            try:
                data = await ctx.github.file_content(ref, path, sha)
            except GitHubRateLimited:
                raise
            except GitHubError as exc:  # one unreadable file costs its analysis, not the review
                log.warning("could not read %s at %s: %s", path, sha[:12], exc)
                return path, None
        try:
            return path, data.decode() if data is not None else None
        except UnicodeDecodeError:
            return path, None

    pairs = await asyncio.gather(*(one(p) for p in paths[:MAX_CONTENT_FILES]))
    return {path: text for path, text in pairs if text is not None}


async def analyze(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    """Static analyzers on the changed files at the head commit; the head contents also give each
    hunk its enclosing function or class (scope lines)."""
    ctx, pr = runtime.context, state["pr"]
    config = RepoConfig(**state["config"])
    await ctx.progress.emit("step", {"step": "analyze"}, progress={"step": "analyze"})
    readable = [d for d in _diffs(_review_files(state))
                if d.has_patch and d.status != "removed" and not config.ignored_by(d.path)]
    reviewable = [d for d in readable if skip_reason(d, config) is None]
    contents = await _contents(ctx, _ref(state), pr["head_sha"], [d.path for d in reviewable])
    scopes = {d.path: found for d in reviewable
              if d.path in contents and (found := find_scopes(d, contents[d.path]))}
    analyzers = {name: ctx.analyzers[name] for name in config.enabled(ctx.analyzers)}
    files = [SourceFile(d.path, contents.get(d.path), d.added_lines()) for d in readable]
    findings, reports = await run_analyzers(analyzers, files)
    await ctx.progress.emit("analyzed", {"analyzers": [{k: r[k] for k in ("name", "status", "kept")}
                                                       for r in reports]})
    return {"scopes": scopes, "analysis": findings, "analyzers": reports}


# --- planning and reviewing --------------------------------------------------------------------------
async def plan(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    ctx, pr = runtime.context, state["pr"]
    config = RepoConfig(**state["config"])
    options = _options(state)
    candidates, skipped = classify(_diffs(_review_files(state), state.get("scopes")), config)
    prompt = {"guidance": guidance(options.focus, config.focus, config.instructions),
              "other_changes": other_changes(skipped), "scope_note": scope_note(state.get("incremental"))}
    empty = group_prompt(state["repo"], state["number"], pr, prompt, "", MAX_FINDINGS_PER_GROUP)
    header = ctx.count_tokens(template("system")) + ctx.count_tokens(empty) + PROMPT_OVERHEAD_TOKENS
    group_tokens = int(ctx.context_tokens * (1 - CONTEXT_MARGIN)) - ctx.max_completion_tokens - header
    # Two calls are kept for the summary and a retry; the rest may each review one group.
    budget = Budget(group_tokens=max(group_tokens, 256), max_groups=max(ctx.max_llm_calls - 2, 1),
                    call_tokens=header + ctx.max_completion_tokens,
                    total_tokens=max(ctx.job_max_tokens - SUMMARY_RESERVE_TOKENS, 1)
                    if ctx.job_max_tokens else 0)
    evidence: dict[str, list[dict[str, Any]]] = {}
    for finding in state.get("analysis", []):
        evidence.setdefault(finding["path"], []).append(finding)
    result = pack(candidates, budget, ctx.count_tokens, evidence)
    skipped += result.skipped
    groups = [g.to_dict() for g in result.groups]
    await ctx.progress.emit(
        "planned", {"groups": len(groups), "skipped": skipped, "group_tokens": budget.group_tokens},
        progress={"step": "review", "files_total": result.files_total, "files_done": 0})
    return {"groups": groups, "skipped": skipped, "prompt": prompt}


def fan_out(state: ReviewState) -> list[Send] | str:
    if not state["groups"]:
        return "collect"
    pr = {k: state["pr"][k] for k in ("title", "body", "commit_messages")}
    return [Send("review_group", GroupTask(group=g, pr=pr, repo=state["repo"], number=state["number"],
                                           options=state.get("options", {}), prompt=state["prompt"]))
            for g in state["groups"]]


def _context_overflow(exc: LLMError) -> bool:
    text = exc.message.lower()
    return "context length" in text or "context window" in text or "too many tokens" in text


async def _ask(ctx: ReviewContext, prompt: str, schema_name: str, schema: dict[str, Any],
               max_tokens: int | None = None) -> dict[str, Any]:
    """The model's JSON answer; a malformed one is asked for once more, reminded of the format."""
    for attempt in range(2):
        content = prompt + (REPAIR_NOTE if attempt else "")
        try:
            answer, _ = await ctx.llm.chat_json(
                [{"role": "system", "content": template("system")}, {"role": "user", "content": content}],
                schema_name=schema_name, schema=schema, meter=ctx.meter, max_tokens=max_tokens)
            return answer
        except LLMBadOutput:
            if attempt:
                raise
    raise AssertionError("unreachable")


async def _review_chunks(ctx: ReviewContext, task: GroupTask,
                         chunks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    paths = list(dict.fromkeys(c["path"] for c in chunks))
    prompt = group_prompt(task["repo"], task["number"], task["pr"], task["prompt"],
                          "\n\n".join(c["text"] for c in chunks), MAX_FINDINGS_PER_GROUP)
    reason: str
    code = "llm_error"
    try:
        answer = await _ask(ctx, prompt, "group_review", group_review_schema(paths))
    except BudgetExceeded as exc:
        reason, code = f"not reviewed: {exc.message}", exc.code
    except LLMBadOutput as exc:
        reason, code = "the model's answer was not the JSON asked for (twice)", exc.code
    except LLMError as exc:
        if _context_overflow(exc) and len(chunks) > 1:  # the token count was short: halve and retry
            half = len(chunks) // 2
            first = await _review_chunks(ctx, task, chunks[:half])
            second = await _review_chunks(ctx, task, chunks[half:])
            return first[0] + second[0], first[1] + second[1]
        reason, code = f"the model failed on this part: {exc.message[:200]}", exc.code
    else:
        raw = answer.get("findings") if isinstance(answer, dict) else None
        return [dict(f, source="model") for f in raw or [] if isinstance(f, dict)], []
    return [], [{"path": p, "reason": reason, "code": code} for p in paths]


async def review_group(task: GroupTask, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    ctx, group = runtime.context, task["group"]
    findings, failed = await _review_chunks(ctx, task, group["chunks"])
    await ctx.progress.emit("group_done", {"group": group["index"], "paths": group["paths"],
                                           "findings": len(findings), "failed": failed},
                            files_done_delta=len(group["completes"]))
    return {"group_findings": findings, "group_skipped": failed}


# --- results -----------------------------------------------------------------------------------------
async def collect(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    """Model and analyzer findings, anchored on the diff, filtered, merged and ranked."""
    options, config = _options(state), RepoConfig(**state["config"])
    failed = state.get("group_skipped", [])
    planned = {p for g in state["groups"] for p in g["paths"]}
    if planned and {s["path"] for s in failed} >= planned:  # nothing reviewed: the job fails, with the cause
        by_code = {cls.code: cls for cls in (BudgetExceeded, LLMTimeout, LLMBadOutput, LLMError)}
        raise by_code.get(failed[0].get("code", ""), LLMError)(
            f"No part of the PR could be reviewed: {failed[0]['reason']}")
    post = {d.path: d for d in _diffs(state["pr"]["files"])}
    shown = {d.path: d for d in _diffs(_review_files(state), state.get("scopes"))}
    anchorer = Anchorer(post, shown, same_numbers_left=not state.get("incremental"))
    raw = list(state.get("group_findings", [])) + list(state.get("analysis", []))
    normalized = [f for f in map(normalize, raw) if f is not None]
    anchored = [f for f in map(anchorer.anchor, normalized) if f is not None]
    kept = [f for f in anchored if config.keeps(f["severity"]) and not config.ignored_by(f["path"])]
    posted = set((state.get("prior") or {}).get("posted_keys", []))
    merged = merge_duplicates(kept)  # before the posted check: what was posted was merged the same way
    fresh = [f for f in merged if key_of(f, post) not in posted]
    max_nits = min(options.max_nits, config.max_nits if config.max_nits is not None else options.max_nits)
    findings = rank(fresh, max_nits=max_nits, max_findings=options.max_findings)
    failed_paths = {s["path"] for s in failed}
    reviewed = sorted(planned - failed_paths)
    stats = {"proposed": len(raw), "unusable": len(raw) - len(normalized),
             "off_diff": len(normalized) - len(anchored), "below_threshold": len(anchored) - len(kept),
             "merged": len(kept) - len(merged), "already_posted": len(merged) - len(fresh),
             "kept": len(findings)}
    await runtime.context.progress.emit("step", {"step": "summarize", "findings": len(findings), **stats},
                                        progress={"step": "summarize"})
    skipped = state["skipped"] + [{"path": s["path"], "reason": s["reason"]} for s in failed]
    repeated = [{k: f[k] for k in ("path", "line", "severity", "title")} for f in merged if f not in fresh]
    return {"findings": findings, "skipped": skipped, "files_reviewed": reviewed, "repeated": repeated}


def decide_verdict(model_verdict: str | None, findings: list[dict[str, Any]], request_changes_at: str) -> str:
    """From the findings, never from the model alone: PR text cannot talk its way to an approval.
    The model may only turn an approval (no findings) into a comment."""
    worst = min((SEVERITY_ORDER[f["severity"]] for f in findings), default=99)
    if worst <= SEVERITY_ORDER[request_changes_at]:
        return "request_changes"
    if findings:
        return "comment"
    return "comment" if model_verdict in ("comment", "request_changes") else "approve"


def _severity_counts(findings: list[dict[str, Any]]) -> str:
    return ", ".join(f"{n} {s}" for s in SEVERITY_ORDER if (n := sum(f["severity"] == s for f in findings)))


def fallback_summary(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return "No problems found in the changed lines."
    counts = _severity_counts(findings)
    return f"Found {len(findings)} issue(s) ({counts}); the most severe: {findings[0]['title']}."


async def summarize(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    ctx, pr, findings = runtime.context, state["pr"], state["findings"]
    config = RepoConfig(**state["config"])
    reviewed, skipped = state["files_reviewed"], state["skipped"]
    analyzers, incremental = state.get("analyzers", []), state.get("incremental")
    prompt = summary_prompt(state["repo"], state["number"], pr, incremental=incremental, reviewed=reviewed,
                            skipped=skipped, analyzers=analyzers, findings=findings)
    verdict: str | None = None
    try:
        answer = await _ask(ctx, prompt, "review_summary", SUMMARY_SCHEMA, max_tokens=400)
        summary, verdict = str(answer.get("summary") or "").strip(), str(answer.get("verdict") or "")
    except LLMBadOutput as exc:  # the findings stand without the model's prose
        log.warning("summary of %s#%s written without the model: %s", state["repo"], state["number"], exc)
        summary = ""
    summary = summary or fallback_summary(findings)
    repeated = state.get("repeated", [])
    if repeated:
        summary += (f"\n\nStill open from earlier reviews (already commented on, not repeated): "
                    f"{len(repeated)} finding(s), {_severity_counts(repeated)}.")
    if incremental:
        summary += (f"\n\nIncremental review: {incremental['files_changed']} file(s) changed since "
                    f"{incremental['since'][:12]}; the rest of the PR was reviewed before.")
    if skipped:
        summary += f"\n\nNot reviewed ({len(skipped)} file(s)): {skipped_summary(skipped)}."
    if config.notes:
        summary += "\n\nRepository instructions: " + "; ".join(config.notes) + "."
    # findings posted before and found again still count: a re-review does not approve them away
    verdict = decide_verdict(verdict, findings + repeated, config.request_changes_at)
    review = {"summary": summary, "verdict": verdict,
              "findings": findings, "files_reviewed": reviewed, "files_skipped": skipped,
              "model": await ctx.llm.model(), "analyzers": analyzers, "incremental": incremental,
              "repo_config": {"sources": config.sources, "notes": config.notes}}
    await ctx.progress.emit("step", {"step": "publish" if _options(state).post else "done"},
                            progress={"step": "publish" if _options(state).post else "done"})
    return {"review": review}


def after_summary(state: ReviewState) -> str:
    return "publish" if _options(state).post else END


async def publish(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    """Post the review to the PR; a refusal is recorded in the review, which stands on its own."""
    ctx, review = runtime.context, state["review"]
    post = {d.path: d for d in _diffs(state["pr"]["files"])}
    try:
        publication = await publish_review(ctx.github, _ref(state), job_id=state["job_id"],
                                           head_sha=state["pr"]["head_sha"], review=review, diffs=post,
                                           prior=state.get("prior"))
    except GitHubTransient:
        raise  # retried by the node's retry policy
    except GitHubError as exc:
        publication = {"status": "failed", "error": {"code": exc.code, "message": exc.message}}
    await ctx.progress.emit("published", publication, progress={"step": "done"})
    return {"review": {**review, "publication": publication}}
