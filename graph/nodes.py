"""The review graph's steps. Each reads the state, does one thing, and reports progress."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import Send

from graph import compute
from graph.analyzers import AnalyzerReport, SourceFile, run_analyzers
from graph.context import ReviewContext
from graph.offload import CpuStepFailed
from graph.prompts import group_prompt, skipped_summary, summary_prompt, template
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

MAX_CONTENT_FILES = 500  # files fetched whole (for analyzers and scopes) in one review
REPAIR_NOTE = ("\n\nYour previous answer was not valid JSON. Answer again with only the JSON object the "
               "schema asks for, nothing before or after it.")


def _ref(state: ReviewState | GroupTask) -> PRRef:
    owner, repo = state["repo"].split("/", 1)
    return PRRef(owner, repo, state["number"])


# --- the PR as fetched: stored once per head commit, referenced from the state ----------------------
PR_METADATA = ("head_sha", "base_sha", "base_ref", "title", "author", "html_url")  # what the state keeps
PR_TEXT = ("title", "body", "commit_messages")  # what the prompts show of the PR besides its diff


async def _fetch(ctx: ReviewContext, ref: PRRef) -> dict[str, Any]:
    pr = await ctx.github.pull_request(ref)
    data = dataclasses.asdict(pr)
    data.pop("ref")
    return data


async def _snapshot(ctx: ReviewContext, repo: str, number: int, head_sha: str) -> dict[str, Any]:
    """The PR at `head_sha` as fetched (files with patches, body, commit messages). Should the store
    have lost it, it is fetched again, which gives the same PR as long as its head has not moved."""
    found = await ctx.snapshot_cache.load(repo, number, head_sha)
    if found is not None:
        return found
    owner, name = repo.split("/", 1)
    data = await _fetch(ctx, PRRef(owner, name, number))
    if data["head_sha"] != head_sha:
        raise GitHubError(f"The PR's files at {head_sha[:12]} are no longer stored and its head has moved on to "
                          f"{data['head_sha'][:12]}; submit it again.")
    await ctx.snapshot_cache.save(repo, number, head_sha, data)
    return data


async def _pr(ctx: ReviewContext, state: ReviewState) -> dict[str, Any]:
    pr = state["pr"]
    if "files" in pr:  # checkpointed whole by an earlier version
        return pr
    return await _snapshot(ctx, state["repo"], state["number"], pr["head_sha"])


def _since_key(since: str, head_sha: str) -> str:
    """The snapshot key of the files changed between two commits of the PR."""
    return f"{since}..{head_sha}"


async def _files_since(ctx: ReviewContext, repo: str, number: int, since: str,
                       pr: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The PR's files changed since commit `since` (GitHub's compare), stored once per commit pair;
    None when the PR did not just move forward from it (a force-push) or GitHub lists too many."""
    key = _since_key(since, pr["head_sha"])
    found = await ctx.snapshot_cache.load(repo, number, key)
    if found is not None:
        return list(found["files"])
    owner, name = repo.split("/", 1)
    comparison = await ctx.github.compare(PRRef(owner, name, number), since, pr["head_sha"])
    if comparison.status != "ahead" or comparison.truncated:
        return None
    in_pr = {f["path"] for f in pr["files"]}
    files = [dataclasses.asdict(f) for f in comparison.files if f.path in in_pr]
    await ctx.snapshot_cache.save(repo, number, key, {"files": files})
    return files


async def _files_to_review(ctx: ReviewContext, repo: str, number: int, pr: dict[str, Any],
                           since: str | None) -> list[dict[str, Any]]:
    """The files the model reviews: the changes since commit `since` (an incremental review), else
    the PR's files."""
    if not since:
        return list(pr["files"])
    files = await _files_since(ctx, repo, number, since, pr)
    if files is None:
        raise GitHubError(f"The changes since {since[:12]} can no longer be listed; submit the PR again.")
    return files


async def _review_files(ctx: ReviewContext, state: ReviewState) -> list[dict[str, Any]]:
    inline = state.get("review_files")  # checkpointed whole by an earlier version
    if inline is not None:
        return inline
    since = (state.get("incremental") or {}).get("since")
    return await _files_to_review(ctx, state["repo"], state["number"], await _pr(ctx, state), since)


def _options(state: ReviewState | GroupTask) -> ReviewOptions:
    return ReviewOptions(**state.get("options", {}))


# --- gathering --------------------------------------------------------------------------------------
async def fetch_pr(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    ctx = runtime.context
    await ctx.progress.emit("step", {"step": "fetch"}, progress={"step": "fetch"})
    data = await _fetch(ctx, _ref(state))
    await ctx.progress.head_sha(data["head_sha"])
    await ctx.snapshot_cache.save(state["repo"], state["number"], data["head_sha"], data)
    await ctx.progress.emit("fetched", {"head_sha": data["head_sha"], "files": len(data["files"])})
    return {"pr": {k: data[k] for k in PR_METADATA}}


async def prepare(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    """The repository's instructions, and, when publishing, what was published before: a PR
    reviewed at an earlier head gets only the changes pushed since."""
    ctx, pr, ref = runtime.context, await _pr(runtime.context, state), _ref(state)
    config = await load_repo_config(ctx.github, ref, pr["base_sha"])
    prior: PriorReview | None = None
    incremental: dict[str, Any] | None = None
    if _options(state).post:
        prior = await find_prior(ctx.github, ref, ctx.marker_key)
        if prior is not None:
            incremental = await _changes_since(ctx, state, prior, pr)
    await ctx.progress.emit("prepared", {"repo_config": config.sources, "notes": config.notes,
                                         "incremental": incremental})
    return {"config": config.model_dump(mode="json"), "prior": prior.to_dict() if prior else None,
            "incremental": incremental}


async def _changes_since(ctx: ReviewContext, state: ReviewState, prior: PriorReview,
                         pr: dict[str, Any]) -> dict[str, Any] | None:
    """The incremental review's info when the PR only moved forward since the prior head; the
    files changed since then are stored as a snapshot of their own (`_files_since`)."""
    if prior.head_sha == pr["head_sha"]:
        return None
    try:
        files = await _files_since(ctx, state["repo"], state["number"], prior.head_sha, pr)
    except (GitHubTransient, GitHubRateLimited):
        raise
    except GitHubError as exc:  # the old head is gone (force-push, GC): review everything again
        log.info("no incremental review of %s: %s", state["repo"], exc)
        return None
    if files is None:
        return None
    return {"since": prior.head_sha, "summary_comment_id": prior.summary_comment_id,
            "files_changed": len(files), "files_in_pr": len(pr["files"])}


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
    hunk its enclosing function or class (scope lines). Diffs and scopes are worked out in a
    worker process: one that takes too long costs the analysis, not the review."""
    ctx, pr = runtime.context, state["pr"]
    config = RepoConfig(**state["config"])
    await ctx.progress.emit("step", {"step": "analyze"}, progress={"step": "analyze"})
    analyzers = {name: ctx.analyzers[name] for name in config.enabled(ctx.analyzers)}
    files = await _review_files(ctx, state)
    try:
        readable, reviewable = await ctx.cpu.run(compute.changed_files, files, state["config"],
                                                 timeout_s=ctx.cpu_timeout_s)
    except CpuStepFailed as exc:
        log.warning("no analysis of %s#%s: %s", state["repo"], state["number"], exc)
        reports = [AnalyzerReport(name, "timeout", detail=f"the diff could not be read: {exc}").to_dict()
                   for name in analyzers]
        await ctx.progress.emit("analyzed", {"analyzers": [{k: r[k] for k in ("name", "status", "kept")}
                                                           for r in reports]})
        return {"scopes": {}, "analysis": [], "analyzers": reports}
    contents = await _contents(ctx, _ref(state), pr["head_sha"], reviewable)
    try:
        scopes = await ctx.cpu.run(compute.scopes_for, [f for f in files if f["path"] in contents], contents,
                                   timeout_s=ctx.cpu_timeout_s)
    except CpuStepFailed as exc:  # the hunks are shown without their enclosing definitions
        log.warning("no scope lines for %s#%s: %s", state["repo"], state["number"], exc)
        scopes = {}
    sources = [SourceFile(path, contents.get(path), added) for path, added in readable]
    findings, reports = await run_analyzers(analyzers, sources)
    await ctx.progress.emit("analyzed", {"analyzers": [{k: r[k] for k in ("name", "status", "kept")}
                                                       for r in reports]})
    return {"scopes": scopes, "analysis": findings, "analyzers": reports}


# --- planning and reviewing --------------------------------------------------------------------------
async def plan(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    """Files packed into groups for the model (graph.compute.plan_review, in a worker process);
    when that takes too long, the files are listed as not reviewed, with the reason."""
    ctx, pr = runtime.context, await _pr(runtime.context, state)
    files = await _review_files(ctx, state)
    try:
        planned = await ctx.cpu.run(
            compute.plan_review, files, state.get("scopes") or {}, state["config"], state.get("options", {}),
            {k: pr[k] for k in PR_TEXT}, state["repo"], state["number"],
            state.get("incremental"), state.get("analysis", []), context_tokens=ctx.context_tokens,
            max_completion_tokens=ctx.max_completion_tokens, max_llm_calls=ctx.max_llm_calls,
            job_max_tokens=ctx.job_max_tokens, count_tokens=ctx.count_tokens, timeout_s=ctx.cpu_timeout_s)
    except CpuStepFailed as exc:
        log.warning("no plan for %s#%s: %s", state["repo"], state["number"], exc)
        reason = f"not reviewed: preparing the diff for the model failed ({exc})"
        planned = {"groups": [], "skipped": [{"path": f["path"], "reason": reason} for f in files],
                   "prompt": {}, "files_total": 0, "group_tokens": 0}
    groups, skipped = planned["groups"], planned["skipped"]
    await ctx.progress.emit(
        "planned", {"groups": len(groups), "skipped": skipped, "group_tokens": planned["group_tokens"]},
        progress={"step": "review", "files_total": planned["files_total"], "files_done": 0})
    return {"groups": groups, "skipped": skipped, "prompt": planned["prompt"]}


def fan_out(state: ReviewState) -> list[Send] | str:
    """One task per group, each carrying references and only the scope lines and analyzer results
    of its own files (a Send's payload is checkpointed with it)."""
    if not state["groups"]:
        return "collect"
    pr, scopes = state["pr"], state.get("scopes") or {}
    evidence: dict[str, list[dict[str, Any]]] = {}
    for finding in state.get("analysis", []):
        evidence.setdefault(finding["path"], []).append(finding)
    since = (state.get("incremental") or {}).get("since")
    inline = {"pr": {k: pr[k] for k in PR_TEXT}} if "files" in pr else {}  # an earlier version's state
    return [Send("review_group", GroupTask(
                group=g, repo=state["repo"], number=state["number"], options=state.get("options", {}),
                prompt=state["prompt"], head_sha=pr["head_sha"], since=since,
                scopes={p: scopes[p] for p in g["paths"] if p in scopes},
                evidence={p: evidence[p] for p in g["paths"] if p in evidence}, **inline))  # type: ignore[typeddict-item]
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


async def _group_chunks(ctx: ReviewContext, task: GroupTask) -> list[dict[str, Any]]:
    """The group's chunks with their text, rendered again from the PR's snapshot in a worker
    process (the plan checkpointed only which part of which file each chunk is)."""
    group = task["group"]
    if all("text" in c for c in group["chunks"]):  # planned by an earlier version: the text is here
        return list(group["chunks"])
    pr = await _snapshot(ctx, task["repo"], task["number"], task["head_sha"])
    files = await _files_to_review(ctx, task["repo"], task["number"], pr, task.get("since"))
    paths = set(group["paths"])
    texts = await ctx.cpu.run(compute.chunk_texts, [f for f in files if f["path"] in paths], task.get("scopes", {}),
                              task.get("evidence", {}), group["chunks"], group["budget"], ctx.count_tokens,
                              timeout_s=ctx.cpu_timeout_s)
    return [{**chunk, "text": text} for chunk, text in zip(group["chunks"], texts, strict=True)]


async def review_group(task: GroupTask, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    ctx, group = runtime.context, task["group"]
    pr = task.get("pr")  # carried by an earlier version's tasks
    if pr is None:
        snapshot = await _snapshot(ctx, task["repo"], task["number"], task["head_sha"])
        pr = {k: snapshot[k] for k in PR_TEXT}
    findings: list[dict[str, Any]] = []
    try:
        chunks = await _group_chunks(ctx, task)
    except CpuStepFailed as exc:
        log.warning("group %s of %s#%s not rendered: %s", group["index"], task["repo"], task["number"], exc)
        reason = f"not reviewed: preparing the diff for the model failed ({exc})"
        failed = [{"path": p, "reason": reason, "code": "timeout"} for p in group["paths"]]
    else:
        findings, failed = await _review_chunks(ctx, {**task, "pr": pr}, chunks)
    await ctx.progress.emit("group_done", {"group": group["index"], "paths": group["paths"],
                                           "findings": len(findings), "failed": failed},
                            files_done_delta=len(group["completes"]))
    return {"group_findings": findings, "group_skipped": failed}


# --- results -----------------------------------------------------------------------------------------
async def collect(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    """Model and analyzer findings, anchored on the diff, filtered, merged and ranked (in a worker
    process: when that takes too long, the review lists the files whose findings were lost)."""
    ctx = runtime.context
    failed = state.get("group_skipped", [])
    planned = {p for g in state["groups"] for p in g["paths"]}
    if planned and {s["path"] for s in failed} >= planned:  # nothing reviewed: the job fails, with the cause
        by_code = {cls.code: cls for cls in (BudgetExceeded, LLMTimeout, LLMBadOutput, LLMError)}
        raise by_code.get(failed[0].get("code", ""), LLMError)(
            f"No part of the PR could be reviewed: {failed[0]['reason']}")
    raw = list(state.get("group_findings", [])) + list(state.get("analysis", []))
    skipped = state["skipped"] + [{"path": s["path"], "reason": s["reason"]} for s in failed]
    reviewed = sorted(planned - {s["path"] for s in failed})
    pr_files, review_files = (await _pr(ctx, state))["files"], await _review_files(ctx, state)
    try:
        result = await ctx.cpu.run(
            compute.collect_findings, pr_files, review_files, state.get("scopes") or {},
            raw, state["config"], state.get("options", {}),
            posted=list((state.get("prior") or {}).get("posted_keys", [])),
            incremental=bool(state.get("incremental")), timeout_s=ctx.cpu_timeout_s)
    except CpuStepFailed as exc:
        log.warning("findings of %s#%s lost: %s", state["repo"], state["number"], exc)
        reason = f"reviewed, but its findings could not be placed on the diff ({exc})"
        skipped += [{"path": path, "reason": reason} for path in reviewed]
        result, reviewed = {"findings": [], "repeated": [], "stats": {"proposed": len(raw), "kept": 0}}, []
    findings = result["findings"]
    await ctx.progress.emit("step", {"step": "summarize", "findings": len(findings), **result["stats"]},
                            progress={"step": "summarize"})
    return {"findings": findings, "skipped": skipped, "files_reviewed": reviewed, "repeated": result["repeated"]}


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
    ctx, pr, findings = runtime.context, await _pr(runtime.context, state), state["findings"]
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
    pr_files = (await _pr(ctx, state))["files"]
    try:
        comments = await ctx.cpu.run(compute.publication_comments, pr_files, review["findings"],
                                     timeout_s=ctx.cpu_timeout_s)
        publication = await publish_review(ctx.github, _ref(state), job_id=state["job_id"],
                                           head_sha=state["pr"]["head_sha"], review=review, comments=comments,
                                           marker_key=ctx.marker_key)
    except GitHubTransient:
        raise  # retried by the node's retry policy
    except GitHubError as exc:
        publication = {"status": "failed", "error": {"code": exc.code, "message": exc.message}}
    except CpuStepFailed as exc:
        publication = {"status": "failed", "error": {"code": "timeout",
                                                     "message": f"The comments could not be prepared: {exc}"}}
    await ctx.progress.emit("published", publication, progress={"step": "done"})
    return {"review": {**review, "publication": publication}}
