"""Progress events as one-line sentences, for the terminal."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from serve_app.terminal import printable


def event_line(event: dict[str, Any]) -> Text:
    """`hh:mm:ss sentence`, ready to print: the sentence's PR and model text is taken literally."""
    return Text.assemble((printable(str(event.get("at") or "")[11:19]), "dim"), " ", describe(event))


def describe(event: dict[str, Any]) -> str:
    """The event as a plain sentence; PR and model text in it has its control characters shown."""
    return printable(_sentence(event))


def _sentence(event: dict[str, Any]) -> str:
    kind = event.get("kind", "")
    if kind == "queued":
        return "queued"
    if kind == "started":
        return f"started (attempt {event.get('attempt')})"
    if kind == "step":
        return f"step: {event.get('step')}"
    if kind == "fetched":
        return f"fetched PR at {str(event.get('head_sha'))[:12]}: {event.get('files')} file(s)"
    if kind == "planned":
        return f"planned {event.get('groups')} group(s); {len(event.get('skipped') or [])} file(s) skipped"
    if kind == "group_done":
        return f"reviewed {', '.join(event.get('paths') or [])}: {event.get('findings')} finding(s)"
    if kind == "prepared":
        since = (event.get("incremental") or {}).get("since")
        return "prepared the diff" + (f" (only what changed since {str(since)[:12]})" if since else "")
    if kind == "analyzed":
        reports = event.get("analyzers") or []
        return "static analysis: " + (", ".join(f"{r['name']} {r['status']} ({r['kept']} kept)" for r in reports)
                                      or "no analyzer ran")
    if kind == "published":
        return f"published to GitHub: {event.get('status', 'posted')}"
    if kind == "requeued":
        return f"re-queued: {event.get('reason')}"
    if kind == "failed":
        error = event.get("error") or {}
        return f"failed: {error.get('message', '')} ({error.get('code')})"
    return kind
