"""The review graph's steps. Each reads the state, does one thing, and reports progress."""

from __future__ import annotations

import dataclasses
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import Send

from graph.context import ReviewContext
from graph.diff import FileDiff, anchor_line, parse_file
from graph.github import PRFile
from graph.plan import plan_review
from graph.prompts import as_data, template
from graph.schemas import SEVERITIES, SUMMARY_SCHEMA, group_review_schema
from graph.state import GroupTask, ReviewState
from prreview.models import SEVERITY_ORDER, ReviewOptions
from prreview.urls import PRRef

PROMPT_OVERHEAD_TOKENS = 600  # system prompt, instructions and JSON scaffolding


def _diffs(pr: dict[str, Any]) -> list[FileDiff]:
    return [parse_file(PRFile(**f)) for f in pr["files"]]


async def fetch_pr(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    ctx = runtime.context
    await ctx.progress.emit("step", {"step": "fetch"}, progress={"step": "fetch"})
    pr = await ctx.github.pull_request(PRRef(*state["repo"].split("/", 1), state["number"]))
    await ctx.progress.head_sha(pr.head_sha)
    data = dataclasses.asdict(pr)
    data.pop("ref")
    await ctx.progress.emit("fetched", {"head_sha": pr.head_sha, "files": len(pr.files)})
    return {"pr": data}


async def plan(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    ctx = runtime.context
    pr = state["pr"]
    header_tokens = ctx.count_tokens(_pr_header(state, pr)) + PROMPT_OVERHEAD_TOKENS
    budget = ctx.context_tokens - ctx.max_completion_tokens - header_tokens
    # Two calls are kept for the summary and a retry; the rest may each review one group.
    result = plan_review(_diffs(pr), budget_tokens=max(budget, 256), max_groups=max(ctx.max_llm_calls - 2, 1),
                         count_tokens=ctx.count_tokens)
    groups = [dataclasses.asdict(g) for g in result.groups]
    await ctx.progress.emit(
        "planned", {"groups": len(groups), "skipped": result.skipped},
        progress={"step": "review", "files_total": result.files_total, "files_done": 0})
    return {"groups": groups, "skipped": result.skipped}


def fan_out(state: ReviewState) -> list[Send] | str:
    if not state["groups"]:
        return "collect"
    return [Send("review_group", GroupTask(group=g, pr=_pr_context(state["pr"]), repo=state["repo"],
                                           number=state["number"], options=state.get("options", {})))
            for g in state["groups"]]


def _pr_context(pr: dict[str, Any]) -> dict[str, Any]:
    return {k: pr[k] for k in ("title", "body", "commit_messages")}


def _pr_header(state: ReviewState | GroupTask, pr: dict[str, Any]) -> str:
    return template("group_review").format(
        repo=state["repo"], number=state["number"], focus="", title=as_data(pr["title"], 300),
        description=as_data(pr["body"]), commits=as_data("\n".join(pr["commit_messages"][-20:]), 2000),
        diff="", max_findings=0)


async def review_group(task: GroupTask, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    ctx = runtime.context
    group, pr = task["group"], task["pr"]
    options = ReviewOptions(**task["options"])
    focus = f"Reviewer focus requested by the operator: {options.focus}\n" if options.focus else ""
    prompt = template("group_review").format(
        repo=task["repo"], number=task["number"], focus=focus, title=as_data(pr["title"], 300),
        description=as_data(pr["body"]), commits=as_data("\n".join(pr["commit_messages"][-20:]), 2000),
        diff=group["text"], max_findings=8)
    answer, _ = await ctx.llm.chat_json(
        [{"role": "system", "content": template("system")}, {"role": "user", "content": prompt}],
        schema_name="group_review", schema=group_review_schema(group["paths"]), meter=ctx.meter)
    findings = [dict(f, source="model") for f in answer.get("findings", []) if isinstance(f, dict)]
    await ctx.progress.emit("group_done", {"group": group["index"], "paths": group["paths"],
                                           "findings": len(findings)},
                            files_done_delta=len(group["paths"]))
    return {"group_findings": findings}


def _clean(raw: dict[str, Any], diffs: dict[str, FileDiff]) -> dict[str, Any] | None:
    diff = diffs.get(str(raw.get("path")))
    if diff is None or raw.get("severity") not in SEVERITIES:
        return None
    side = "LEFT" if raw.get("side") == "LEFT" else "RIGHT"
    try:
        line = anchor_line(diff, int(raw["line"]), side)
    except (TypeError, ValueError, KeyError):
        return None
    if line is None:
        return None
    end_line = raw.get("end_line")
    if not isinstance(end_line, int) or end_line <= line or end_line not in diff.commentable(side):
        end_line = None
    finding = {"path": diff.path, "line": line, "side": side, "severity": raw["severity"],
               "category": str(raw.get("category") or "general")[:40] or "general",
               "title": str(raw.get("title") or "")[:120], "body": str(raw.get("body") or "")[:2000],
               "source": raw.get("source", "model")}
    if end_line:
        finding["end_line"] = end_line
    if raw.get("suggestion"):
        finding["suggestion"] = str(raw["suggestion"])
    return finding


def rank_findings(raw: list[dict[str, Any]], diffs: dict[str, FileDiff], options: ReviewOptions) -> list[dict]:
    """Anchor every finding on the diff, merge duplicates, order by severity, cap nits."""
    best: dict[tuple[str, int, str, str], dict[str, Any]] = {}
    for item in raw:
        finding = _clean(item, diffs)
        if finding is None:
            continue
        key = (finding["path"], finding["line"], finding["side"], finding["title"].strip().lower())
        kept = best.get(key)
        if kept is None or SEVERITY_ORDER[finding["severity"]] < SEVERITY_ORDER[kept["severity"]]:
            best[key] = finding
    ordered = sorted(best.values(), key=lambda f: (SEVERITY_ORDER[f["severity"]], f["path"], f["line"]))
    nits = [f for f in ordered if f["severity"] == "nit"][: options.max_nits]
    return ([f for f in ordered if f["severity"] != "nit"] + nits)[: options.max_findings]


async def collect(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    diffs = {d.path: d for d in _diffs(state["pr"])}
    findings = rank_findings(state.get("group_findings", []), diffs, ReviewOptions(**state.get("options", {})))
    await runtime.context.progress.emit("step", {"step": "summarize", "findings": len(findings)},
                                        progress={"step": "summarize"})
    return {"findings": findings}


def _floor_verdict(verdict: str, findings: list[dict[str, Any]]) -> str:
    """The model may be stricter than the findings, never laxer."""
    worst = min((SEVERITY_ORDER[f["severity"]] for f in findings), default=99)
    floor = "request_changes" if worst <= 1 else "comment" if worst <= 3 else "approve"
    order = ["approve", "comment", "request_changes"]
    return max(verdict if verdict in order else "comment", floor, key=order.index)


async def summarize(state: ReviewState, runtime: Runtime[ReviewContext]) -> dict[str, Any]:
    ctx = runtime.context
    pr, findings = state["pr"], state["findings"]
    reviewed = sorted({p for g in state["groups"] for p in g["paths"]})
    prompt = template("summary").format(
        repo=state["repo"], number=state["number"], title=as_data(pr["title"], 300),
        description=as_data(pr["body"], 1500), files_reviewed=", ".join(reviewed) or "none",
        files_skipped=", ".join(f"{s['path']} ({s['reason']})" for s in state["skipped"]) or "none",
        findings="\n".join(f"- [{f['severity']}] {f['path']}:{f['line']} {f['title']}" for f in findings[:40])
        or "none")
    answer, _ = await ctx.llm.chat_json(
        [{"role": "system", "content": template("system")}, {"role": "user", "content": prompt}],
        schema_name="review_summary", schema=SUMMARY_SCHEMA, meter=ctx.meter, max_tokens=400)
    summary = str(answer.get("summary") or "").strip()
    if state["skipped"]:
        summary += f"\n\nNot reviewed: {len(state['skipped'])} file(s), listed under files_skipped."
    review = {"summary": summary, "verdict": _floor_verdict(str(answer.get("verdict")), findings),
              "findings": findings, "files_reviewed": reviewed, "files_skipped": state["skipped"],
              "model": await ctx.llm.model()}
    await ctx.progress.emit("step", {"step": "done"}, progress={"step": "done"})
    return {"review": review}
