"""`pr-review batch`: review a list of PRs with live progress, one result file per PR, a summary.

The server does the work and keeps the state: the batch is submitted through `POST /v1/batches`
and watched through `GET /v1/batches/{id}`. Running the same command again resumes, because the
API answers a PR already reviewed at its current head (or still in progress) with the existing
review: nothing is reviewed twice and no LLM call is repeated.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from prreview.models import TERMINAL_STATUSES
from serve_app.client import APIError, Client
from serve_app.markdown import review_markdown

MAX_URL_CHARS = 2000
CHUNK_URLS = 200  # URLs per POST, which keeps each body well under the API's 64 KiB limit
RESUBMIT_AFTER_S = 5.0  # a PR refused for now (queue full, key at its quota) is offered again this often
MAX_POLL_FAILURES_S = 60.0  # the API may restart; give up after this long without an answer
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
SEVERITIES = ("critical", "major", "minor", "nit")
RETRYABLE_ITEM_ERRORS = frozenset({"queue_full", "quota_exceeded"})  # offered again until there is room
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})  # POST /v1/batches is sent again after these
STYLES = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "invalid": "magenta",
          "running": "cyan", "queued": "dim"}


class BatchError(Exception):
    """The batch could not run or finish (API unreachable); the message is one line."""


class EmptyBatch(BatchError):
    """The input names no PR at all."""


# --- input --------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One PR of the batch: the line that named it, then what the API made of it."""

    line: int
    text: str
    review_id: str | None = None
    job: dict[str, Any] | None = None  # the latest review resource
    error: dict[str, str] | None = None  # why the line was refused (status "invalid")
    retry: bool = False  # refused for now (queue full, quota): offered again later

    @property
    def status(self) -> str:
        if self.job is not None:
            return str(self.job["status"])
        return "invalid" if self.error is not None and not self.retry else "queued"

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES or self.status == "invalid"


@dataclass
class BatchInput:
    entries: list[Entry]
    duplicates: int


def strip_comment(line: str) -> str:
    """A line without its `#` comment: whole-line, or after whitespace (a URL's own `#fragment`
    has none before it, so it stays)."""
    text = line.strip()
    if text.startswith("#"):
        return ""
    for sep in (" #", "\t#"):
        text = text.split(sep, 1)[0]
    return text.strip()


def parse_lines(lines: Iterable[str]) -> BatchInput:
    """One URL a line; blank lines and comments skipped, repeats collapsed (first one kept).
    Whether a URL names a PR this service may review is the API's call, reported per line."""
    entries: list[Entry] = []
    seen: set[str] = set()
    duplicates = 0
    for number, raw in enumerate(lines, start=1):
        text = strip_comment(raw)
        if not text:
            continue
        key = text.rstrip("/").lower()
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        entry = Entry(number, text)
        if len(text) > MAX_URL_CHARS:
            entry.error = {"code": "invalid_pr_url",
                           "message": f"The line is longer than {MAX_URL_CHARS} characters."}
        elif any(ch.isspace() for ch in text):
            entry.error = {"code": "invalid_pr_url", "message": "A line holds one URL, without spaces."}
        entries.append(entry)
    return BatchInput(entries, duplicates)


def result_stem(job: dict[str, Any]) -> str:
    """`owner__repo__number`, the name of a PR's result files."""
    return f"{job['repo'].replace('/', '__')}__{job['number']}"


# --- progress -----------------------------------------------------------------------------------
class ProgressView:
    """A live bar on a terminal; elsewhere (CI logs, pipes) one line each time the counts change."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last = ""
        self._progress: Progress | None = None
        if console.is_terminal:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("[bold]reviews"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"), TextColumn("[cyan]{task.fields[rate]}"),
                TextColumn("ETA {task.fields[eta]}"), console=console)
            self._task = self._progress.add_task("reviews", total=None, counts="", rate="", eta="")

    def __enter__(self) -> ProgressView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def note(self, text: str) -> None:
        """A line above the bar (a review that ended, a warning)."""
        self.console.print(text, highlight=False, soft_wrap=True)

    def update(self, done: int, total: int, counts: dict[str, int], rate_per_min: float | None,
               eta_s: float | None) -> None:
        shown = " ".join(f"{s}={counts[s]}" for s in (*STATUSES, "invalid") if counts.get(s))
        rate = f"{rate_per_min:.1f} reviews/min" if rate_per_min is not None else "-- reviews/min"
        eta = _duration(eta_s) if eta_s is not None else ("0s" if done >= total else "--")
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total, counts=shown, rate=rate, eta=eta)
            return
        line = f"progress: {done}/{total} done  {shown}  {rate}  ETA {eta}"
        if shown != self._last:  # the rate and ETA alone changing is no news worth a line
            self._last = shown
            self.console.print(line, highlight=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# --- the run ------------------------------------------------------------------------------------
@dataclass
class BatchRun:
    api: Client
    entries: list[Entry]
    out_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    poll_s: float = 1.0
    batch_ids: list[str] = field(default_factory=list)
    reused: int = 0  # reviews already finished when this run submitted them
    duplicates: int = 0  # lines naming a PR already listed (same text, or the same review)

    def submit(self, entries: list[Entry]) -> None:
        """Submit `entries` (in chunks) and record each one's review id or refusal."""
        for start in range(0, len(entries), CHUNK_URLS):
            chunk = entries[start:start + CHUNK_URLS]
            answer = _with_retries(partial(self.api.submit_batch, [e.text for e in chunk], self.options))
            self.batch_ids.append(str(answer["id"]))
            for entry, item in zip(chunk, answer["reviews"], strict=True):
                entry.error, entry.retry = item.get("error"), False
                if entry.error is not None:
                    entry.retry = entry.error.get("code") in RETRYABLE_ITEM_ERRORS
                    continue
                entry.review_id = str(item["id"])
                if item.get("status") in TERMINAL_STATUSES:
                    self.reused += 1
        self._collapse_same_reviews()

    def _collapse_same_reviews(self) -> None:
        """Two spellings of one PR (`.../pull/7` and `.../pull/7/files`) get one review: keep one line."""
        kept: dict[str, Entry] = {}
        for entry in list(self.entries):
            if entry.review_id is None:
                continue
            if entry.review_id in kept:
                self.entries.remove(entry)
                self.duplicates += 1
            else:
                kept[entry.review_id] = entry

    def poll(self) -> None:
        """Refresh every review from the batches submitted so far."""
        jobs: dict[str, dict[str, Any]] = {}
        for batch_id in self.batch_ids:
            for item in self.api.batch(batch_id)["reviews"]:
                if "id" in item and "status" in item:
                    jobs[str(item["id"])] = item
        for entry in self.entries:
            if entry.review_id in jobs:
                entry.job = jobs[entry.review_id]

    def write_result(self, entry: Entry) -> tuple[Path, Path] | None:
        """`<owner>__<repo>__<number>.md` and `.json` for a review that ended."""
        if entry.job is None or entry.job["status"] not in TERMINAL_STATUSES:
            return None
        stem = self.out_dir / result_stem(entry.job)
        markdown, data = stem.with_suffix(".md"), stem.with_suffix(".json")
        markdown.write_text(review_markdown(entry.job), encoding="utf-8")
        data.write_text(json.dumps(entry.job, indent=2) + "\n", encoding="utf-8")
        return markdown, data

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries:
            counts[entry.status] = counts.get(entry.status, 0) + 1
        return counts

    def watch(self, view: ProgressView) -> None:
        """Poll until every review has ended, writing each one's files as soon as it ends."""
        started = time.monotonic()
        done_at_start: int | None = None
        announced: set[int] = set()
        failing_since: float | None = None
        last_resubmit = time.monotonic()
        while True:
            try:
                self.poll()
                failing_since = None
            except (httpx.TransportError, APIError) as exc:
                if isinstance(exc, APIError) and exc.status < 500:
                    raise BatchError(f"the API refused to report the batch: {exc.message}") from exc
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > MAX_POLL_FAILURES_S:
                    raise BatchError(f"the API has not answered for {MAX_POLL_FAILURES_S:.0f} s "
                                     f"({type(exc).__name__}: {exc})") from exc
            for entry in self.entries:
                if entry.done and entry.line not in announced:
                    announced.add(entry.line)
                    self.write_result(entry)
                    view.note(_finished_line(entry))
            reviews = [e for e in self.entries if e.status != "invalid"]  # refused lines are no work
            done = sum(1 for e in reviews if e.done)
            if done_at_start is None:
                done_at_start = done
            elapsed = time.monotonic() - started
            fresh = done - done_at_start  # reviews that ended during this run set the pace
            rate = fresh / (elapsed / 60) if fresh and elapsed > 0 else None
            eta = (len(reviews) - done) / (rate / 60) if rate else None
            view.update(done, len(reviews), self.counts(), rate, eta)
            if done >= len(reviews):
                return
            waiting = [e for e in self.entries if e.retry]
            if waiting and time.monotonic() - last_resubmit >= RESUBMIT_AFTER_S:
                last_resubmit = time.monotonic()
                self.submit(waiting)
            time.sleep(self.poll_s)

    # --- summary --------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        rows = [_summary_row(entry, self.write_result(entry)) for entry in self.entries]
        totals: dict[str, Any] = {
            "prs": len(rows), "duplicates_skipped": self.duplicates, "reused": self.reused,
            "counts": self.counts(),
            "findings": {s: sum(r["findings"][s] for r in rows) for s in SEVERITIES},
            "tokens": {k: sum(r["tokens"][k] for r in rows) for k in ("prompt", "completion", "total")},
            "llm_calls": sum(r["llm_calls"] for r in rows),
        }
        return {"batch_ids": self.batch_ids, "out_dir": str(self.out_dir), "totals": totals, "reviews": rows,
                "exit_status": exit_status(rows)}

    def finish(self, console: Console) -> dict[str, Any]:
        """Rewrite each result in its final form (a review's last event lands just after its status),
        write summary.json and summary.md, print the table, and return the summary."""
        with contextlib.suppress(httpx.TransportError, APIError):  # else the files keep the last poll's view
            self.poll()
        summary = self.summary()
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (self.out_dir / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
        console.print(summary_table(summary))
        totals = summary["totals"]
        console.print(
            f"{totals['prs']} PR(s): " + ", ".join(f"{n} {s}" for s, n in sorted(totals["counts"].items()))
            + f"; {totals['reused']} reused, {totals['duplicates_skipped']} duplicate line(s) skipped; "
            f"{totals['llm_calls']} LLM call(s), {totals['tokens']['total']} tokens. "
            f"Results in {self.out_dir}", highlight=False, soft_wrap=True)
        return summary


def _busy_or_restarting(exc: BaseException) -> bool:
    """The API could not be reached, or said it is overloaded or restarting."""
    if isinstance(exc, APIError):
        return exc.status in RETRYABLE_STATUSES
    return isinstance(exc, httpx.TransportError)


def _with_retries(call: Callable[[], dict[str, Any]], attempts: int = 5) -> dict[str, Any]:
    """POST /v1/batches again when the API is busy or restarting (waiting 1, 2, 4... s, at most
    15 s); repeating it is safe, since the API answers a PR already queued or reviewed with the
    review it has. The last error is raised as it is."""
    retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=1, max=15),
                        retry=retry_if_exception(_busy_or_restarting), reraise=True)
    return retrying(call)


def _finished_line(entry: Entry) -> str:
    status = entry.status
    style = STYLES.get(status, "")
    if entry.job is None:
        error = entry.error or {}
        return (f"[{style}]✗ line {entry.line}: {escape(entry.text)}[/{style}] — "
                f"{escape(error.get('message', 'refused'))}")
    job = entry.job
    name = f"{job['repo']}#{job['number']}"
    if status == "succeeded" and job.get("review"):
        review = job["review"]
        return (f"[{style}]✓ {name} succeeded[/{style}]: {review['verdict']}, "
                f"{len(review['findings'])} finding(s)")
    error = job.get("error") or {}
    return f"[{style}]✗ {name} {status}[/{style}]: {escape(error.get('message', 'no detail'))}"


def _summary_row(entry: Entry, files: tuple[Path, Path] | None) -> dict[str, Any]:
    job = entry.job or {}
    review = job.get("review") or {}
    usage = job.get("usage") or {}
    findings = {s: sum(1 for f in review.get("findings") or [] if f["severity"] == s) for s in SEVERITIES}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {
        "line": entry.line, "input": entry.text, "pr_url": job.get("pr_url", entry.text),
        "id": entry.review_id,
        "repo": job.get("repo"), "number": job.get("number"), "status": entry.status,
        "verdict": review.get("verdict"), "findings": findings,
        "tokens": {"prompt": prompt, "completion": completion, "total": prompt + completion},
        "llm_calls": int(usage.get("llm_calls") or 0),
        "error": job.get("error") if entry.job is not None else entry.error,
        "files": {"markdown": files[0].name, "json": files[1].name} if files else None,
    }


def exit_status(rows: list[dict[str, Any]]) -> int:
    """1 when any review failed or was cancelled; refused lines are reported, not fatal."""
    return 1 if any(r["status"] in ("failed", "cancelled") for r in rows) else 0


def _pr_name(row: dict[str, Any]) -> str:
    if row["repo"]:
        return f"{row['repo']}#{row['number']}"
    text = row["input"] if len(row["input"]) <= 60 else row["input"][:59] + "…"
    return f"line {row['line']}: {text}"


def _error_text(row: dict[str, Any]) -> str:
    error = row["error"] or {}
    return f"{error.get('code')}: {error.get('message')}" if error else ""


def summary_table(summary: dict[str, Any]) -> Table:
    """The terminal's summary: one row per PR; error codes only (summary.md has the messages)."""
    table = Table(title="pr-review batch")
    table.add_column("PR", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for column in ("crit", "major", "minor", "nit", "tokens"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("error", overflow="fold")
    for row in summary["reviews"]:
        style = STYLES.get(row["status"], "")
        table.add_row(_pr_name(row), f"[{style}]{row['status']}[/{style}]", row["verdict"] or "",
                      *(str(row["findings"][s]) for s in SEVERITIES), str(row["tokens"]["total"]),
                      (row["error"] or {}).get("code", ""))
    return table


def summary_markdown(summary: dict[str, Any]) -> str:
    totals = summary["totals"]
    lines = ["# pr-review batch summary", "",
             "| PR | status | verdict | critical | major | minor | nit | tokens | error | result |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for row in summary["reviews"]:
        result = f"[{row['files']['markdown']}]({row['files']['markdown']})" if row["files"] else ""
        cells = [_pr_name(row), row["status"], row["verdict"] or "",
                 *(str(row["findings"][s]) for s in SEVERITIES), str(row["tokens"]["total"]),
                 _error_text(row), result]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(totals["counts"].items()))
    lines += ["", f"**{totals['prs']} PR(s):** {counts}. Reused: {totals['reused']}. "
              f"Duplicate lines skipped: {totals['duplicates_skipped']}.  ",
              "**Findings:** " + ", ".join(f"{totals['findings'][s]} {s}" for s in SEVERITIES)
              + f". **LLM calls:** {totals['llm_calls']}. **Tokens:** {totals['tokens']['prompt']} in / "
              f"{totals['tokens']['completion']} out.", ""]
    return "\n".join(lines)


def run_batch(api: Client, lines: Iterable[str], out_dir: Path, console: Console, *,
              options: dict[str, Any] | None = None, poll_s: float = 1.0) -> dict[str, Any]:
    """The whole command: parse, submit, watch, write. Returns the summary (see `exit_status`).
    Raises BatchError when it cannot run; KeyboardInterrupt leaves the reviews running server-side."""
    parsed = parse_lines(lines)
    if not parsed.entries:
        raise EmptyBatch("no PR URL in the input (one URL a line; blank lines and # comments are skipped)")
    out_dir.mkdir(parents=True, exist_ok=True)
    run = BatchRun(api, parsed.entries, out_dir, options or {}, poll_s=poll_s, duplicates=parsed.duplicates)
    try:
        run.submit([e for e in run.entries if e.error is None])
    except (httpx.TransportError, APIError) as exc:
        raise BatchError(f"could not submit the batch: {type(exc).__name__}: {exc}") from exc
    accepted = sum(1 for e in run.entries if e.review_id is not None)
    console.print(f"submitted {accepted} PR(s) in batch {', '.join(run.batch_ids) or '-'} "
                  f"({run.reused} already reviewed, {run.duplicates} duplicate line(s) skipped); "
                  f"results go to {out_dir}", highlight=False, soft_wrap=True)
    try:
        with ProgressView(console) as view:
            run.watch(view)
    except (KeyboardInterrupt, BatchError):
        run.finish(console)  # what is known so far; the same command picks up from here
        raise
    return run.finish(console)
