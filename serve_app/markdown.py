"""A review resource as Markdown, for the terminal, batch files and the README."""

from __future__ import annotations

from typing import Any

from serve_app.terminal import printable

ICONS = {"critical": "🔴", "major": "🟠", "minor": "🟡", "nit": "⚪"}
VERDICTS = {"approve": "✅ approve", "comment": "💬 comment", "request_changes": "⛔ request changes"}


def review_markdown(job: dict[str, Any]) -> str:
    """The review as Markdown; control characters in PR and model text are written out."""
    return printable(_markdown(job))


def _markdown(job: dict[str, Any]) -> str:
    lines = [f"# Review of {job['repo']}#{job['number']}", "", f"<{job['pr_url']}>", ""]
    usage = job.get("usage") or {}
    if job["status"] != "succeeded" or not job.get("review"):
        error = job.get("error") or {}
        lines.append(f"**Status:** {job['status']}" + (f" — {error.get('message')} (`{error.get('code')}`)"
                                                       if error else ""))
        return "\n".join(lines) + "\n"
    review = job["review"]
    lines += [f"**Verdict:** {VERDICTS.get(review['verdict'], review['verdict'])}  ",
              f"**Head:** `{(job.get('head_sha') or '')[:12]}` · **Model:** `{review['model']}` · "
              f"**LLM calls:** {usage.get('llm_calls', 0)} · **Tokens:** "
              f"{usage.get('prompt_tokens', 0)} in / {usage.get('completion_tokens', 0)} out", "",
              "## Summary", "", review["summary"], ""]
    lines += [f"## Findings ({len(review['findings'])})", ""]
    if not review["findings"]:
        lines += ["No problems found.", ""]
    for f in review["findings"]:
        where = f"{f['path']}:{f['line']}" + (f"-{f['end_line']}" if f.get("end_line") else "")
        side = " (old side)" if f.get("side") == "LEFT" else ""
        lines += [f"### {ICONS.get(f['severity'], '')} [{f['severity']}] {f['title']}",
                  f"`{where}`{side} · {f['category']}" + (f" · found by {f['source']}" if f.get("source") else ""),
                  "", f["body"], ""]
        if f.get("suggestion"):
            lines += ["```suggestion", f["suggestion"], "```", ""]
    if review["files_skipped"]:
        lines += ["## Not reviewed", ""] + [f"- `{s['path']}`: {s['reason']}" for s in review["files_skipped"]]
        lines.append("")
    return "\n".join(lines)
