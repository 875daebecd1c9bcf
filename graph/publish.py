"""Publishing a review to the PR, and reading back what earlier reviews published (for
idempotency and incremental reviews).

What a review posts:
- **one summary comment per PR** (a conversation comment), created by the PR's first review and
  edited in place by every later one: verdict, summary, what was not reviewed;
- **each inline finding once**, as a review with comments (`event: COMMENT`, a short body), or
  comment by comment when GitHub refuses one of them (422). Never an approval or a block: the
  verdict is shown, merging is left to people.

Hidden markers, `<!-- pr-review:<kind>=<value> sig=<hmac> -->`, make this safe to repeat and tell
later reviews what was done: the summary comment carries `summary` (which comment it is), `head`
(the last reviewed head: the next push is reviewed from there) and `job` (the jobs that wrote
it); the inline review carries `job`; each inline comment `finding` (see
`graph.findings.finding_key`: a finding already on the PR is not posted again).

Anyone can write a comment that looks like ours, and the model writes what a PR description asks
it to. So a marker counts only when
1. its `sig` is the HMAC-SHA256, with the service's marker key, of the PR, its kind and value, and
2. it is in a comment or review written by our own account (`GitHubClient.authenticated_login`);
and every text we post that comes from the model or the PR is `scrub`bed: HTML comments and
anything resembling `pr-review:` are removed, and our markers come after all of it.

GitHub may do a write and still answer 502 or time out (`GitHubWriteUncertain`): each write
looks for its marker before it is sent again, so a review or comment is posted once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import re2

from graph.diff import FileDiff
from graph.findings import key_of
from graph.github import GitHubClient, GitHubWriteUncertain
from prreview.errors import GitHubError, GitHubTransient
from prreview.urls import PRRef

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 60_000  # GitHub refuses bodies over 65,536 characters; markers come on top
MAX_JOB_MARKERS = 20  # jobs remembered in the summary comment: a resumed one finds its own
WRITE_ATTEMPTS = 3  # sends of one write whose outcome GitHub left unclear
WRITE_CHECK_DELAY_S = 1.0  # before looking for a write GitHub may have done (its lists lag a little)
_MARKER = re.compile(r"<!-- pr-review:(?P<kind>[a-z]{1,16})=(?P<value>[\w.-]{1,100}) "
                     r"sig=(?P<sig>[0-9a-f]{64}) -->")
_PROSE_START = re2.compile(r"(?i)^(?:use|add|remove|replace|consider|catch|pass|move|avoid|call|wrap|make|read|"
                           r"check|validate|ensure|prefer|do not|don't|change|rename|handle|log|return)\b")
_ASSIGNMENT = re2.compile(r"^\s*[\w.\[\]\"']+\s*(?::\s*[\w\[\], .|]+)?\s*=[^=]")
_LOOKS_LIKE_OURS = re2.compile(r"(?i)pr[\s_\-‐-―]*review\s*:")
ICONS = {"critical": "🔴", "major": "🟠", "minor": "🟡", "nit": "⚪"}
VERDICTS = {"approve": "✅ looks good to merge", "comment": "💬 comments",
            "request_changes": "⛔ changes requested"}


# --- markers -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Markers:
    """Signed markers of one PR, with the service's secret `key`."""

    key: bytes
    ref: PRRef

    def _signature(self, kind: str, value: str) -> str:
        pr = f"{self.ref.owner}/{self.ref.repo}#{self.ref.number}".lower()  # GitHub names ignore case
        return hmac.new(self.key, f"pr-review marker 1\n{pr}\n{kind}={value}".encode(), hashlib.sha256).hexdigest()

    def make(self, kind: str, value: str) -> str:
        return f"<!-- pr-review:{kind}={value} sig={self._signature(kind, value)} -->"

    def read(self, text: str | None, kind: str) -> list[str]:
        """The values of the validly signed `kind` markers in `text`, in order."""
        return [m["value"] for m in _MARKER.finditer(text or "")
                if m["kind"] == kind and hmac.compare_digest(m["sig"], self._signature(kind, m["value"]))]

    def job(self, job_id: str) -> str:
        return self.make("job", job_id)

    def head(self, sha: str) -> str:
        return self.make("head", sha)

    def finding(self, key: str) -> str:
        return self.make("finding", key)

    def summary(self) -> str:
        return self.make("summary", str(self.ref.number))


def _ours(item: dict[str, Any], login: str | None) -> bool:
    """Written by our own account (the token's login; a bot, when the token cannot say who it is)."""
    user = item.get("user") or {}
    return user.get("login") == login if login else user.get("type") == "Bot"


def scrub(text: str) -> str:
    """Model or PR text made unable to carry a marker or hidden content: HTML comments and their
    delimiters removed, and anything resembling `pr-review:` taken apart."""
    while True:
        before = text
        while (stripped := _without_comments(text)) != text:
            text = stripped
        text = _LOOKS_LIKE_OURS.sub("pr-review ", text.replace("-->", ""))
        if text == before:
            return text


def _without_comments(text: str) -> str:
    """`text` less its HTML comments (an unclosed one runs to the end, as in a browser)."""
    out, position = [], 0
    while (start := text.find("<!--", position)) >= 0:
        out.append(text[position:start])
        end = text.find("-->", start + 4)
        position = len(text) if end < 0 else end + 3
    out.append(text[position:])
    return "".join(out)


# --- what was published before -----------------------------------------------------------------------
@dataclass
class PriorReview:
    summary_comment_id: int
    head_sha: str
    html_url: str = ""
    posted_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"summary_comment_id": self.summary_comment_id, "head_sha": self.head_sha,
                "html_url": self.html_url, "posted_keys": self.posted_keys}


def summary_comment(comments: Iterable[dict[str, Any]], login: str | None, markers: Markers) -> dict[str, Any] | None:
    """Our summary comment on the PR (the oldest, should a race have made two)."""
    return next((c for c in comments if _ours(c, login) and markers.read(c.get("body"), "summary")), None)


async def posted_keys(github: GitHubClient, ref: PRRef, login: str | None, markers: Markers) -> set[str]:
    return {key for comment in await github.list_review_comments(ref) if _ours(comment, login)
            for key in markers.read(comment.get("body"), "finding")}


async def find_prior(github: GitHubClient, ref: PRRef, marker_key: bytes) -> PriorReview | None:
    """What pr-review last published on this PR: the head its summary comment was written for,
    and the findings posted inline."""
    login = await github.authenticated_login()
    markers = Markers(marker_key, ref)
    summary = summary_comment(await github.list_issue_comments(ref), login, markers)
    heads = markers.read(summary.get("body"), "head") if summary else []
    if summary is None or not heads:
        return None
    return PriorReview(int(summary["id"]), heads[-1], str(summary.get("html_url") or ""),
                       sorted(await posted_keys(github, ref, login, markers)))


# --- rendering ---------------------------------------------------------------------------------------
def looks_like_code(suggestion: str, line_text: str | None) -> bool:
    """Whether a suggestion can be a GitHub suggestion block (it replaces the commented lines)."""
    first = suggestion.strip().splitlines()[0] if suggestion.strip() else ""
    if not first or "`" in suggestion:
        return False
    if _PROSE_START.search(first) and (first.endswith(".") or " the " in first):
        return False
    if first.endswith(".") and len(first.split()) > 4:
        return False
    # a bare expression offered for an assignment would replace the whole line with a fragment
    return not (line_text and _ASSIGNMENT.search(line_text) and "\n" not in suggestion
                and not _ASSIGNMENT.search(suggestion))


def _with_indent(suggestion: str, line_text: str | None) -> str:
    if line_text is None or "\n" in suggestion or suggestion[:1].isspace():
        return suggestion
    return line_text[: len(line_text) - len(line_text.lstrip())] + suggestion


def comment_body(finding: dict[str, Any], line_text: str | None) -> str:
    """An inline comment's text (its signed finding marker is added when it is posted)."""
    title, category = scrub(finding["title"]), scrub(finding["category"])
    lines = [f"{ICONS.get(finding['severity'], '')} **[{finding['severity']}] {title}** · "
             f"{category} · found by {scrub(finding['source'])}", "", scrub(finding["body"])]
    suggestion = scrub(finding.get("suggestion") or "")
    if suggestion and finding["side"] == "RIGHT" and looks_like_code(suggestion, line_text):
        single_line = line_text if not finding.get("end_line") else None
        lines += ["", "```suggestion", _with_indent(suggestion, single_line), "```"]
    elif suggestion:
        lines += ["", f"**Suggested fix:** {suggestion}"]
    return "\n".join(lines)


def comment_payload(finding: dict[str, Any], body: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"path": finding["path"], "side": finding["side"], "body": body}
    if finding.get("end_line"):
        payload.update(start_line=finding["line"], start_side=finding["side"], line=finding["end_line"])
    else:
        payload["line"] = finding["line"]
    return payload


@dataclass(frozen=True)
class PlannedComment:
    """One finding as an inline comment: its key (what identifies it across pushes) and payload."""

    key: str
    payload: dict[str, Any]
    path: str
    line: int
    title: str


def plan_comments(findings: list[dict[str, Any]], diffs: dict[str, FileDiff]) -> list[PlannedComment]:
    """Every finding as the inline comment it would be (CPU-bound over big diffs: see graph.compute)."""
    planned = []
    for finding in findings:
        diff = diffs.get(finding["path"])
        line_text = diff.line_text(finding["line"], finding["side"]) if diff else None
        payload = comment_payload(finding, comment_body(finding, line_text))
        planned.append(PlannedComment(key_of(finding, diffs), payload, finding["path"], finding["line"],
                                      finding["title"]))
    return planned


def _counts(findings: list[dict[str, Any]]) -> str:
    counts = {s: sum(f["severity"] == s for f in findings) for s in ICONS}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"


def summary_body(review: dict[str, Any], *, head_sha: str, inline: int, unplaced: list[PlannedComment]) -> str:
    """The summary comment's text, without markers (`with_markers` adds them)."""
    findings = review["findings"]
    verdict = VERDICTS.get(review["verdict"], review["verdict"])
    lines = [f"### pr-review: {verdict}", "", scrub(review["summary"]), "",
             f"**Findings:** {_counts(findings)}" + (f" ({inline} posted inline)" if inline else "")]
    if unplaced:
        lines += ["", f"<details><summary>Findings not placed on the diff ({len(unplaced)})</summary>", ""]
        lines += [f"- **{scrub(c.title)}** — `{scrub(c.path)}:{c.line}`" for c in unplaced]
        lines += ["", "</details>"]
    if review["files_skipped"]:
        lines += ["", f"<details><summary>Not reviewed ({len(review['files_skipped'])} files)</summary>", ""]
        lines += [f"- `{scrub(s['path'])}`: {scrub(s['reason'])}" for s in review["files_skipped"][:200]]
        lines += ["", "</details>"]
    tools = [f"{a['name']} ({a['status']}, {a['kept']} on changed lines)" for a in review.get("analyzers", [])]
    footer = f"Reviewed `{head_sha[:12]}` with `{scrub(review['model'])}`"
    if review.get("incremental"):
        footer += f" · changes since `{review['incremental']['since'][:12]}` only"
    if tools:
        footer += " · static analysis: " + ", ".join(tools)
    footer += " · this comment is updated on every review"
    lines += ["", f"<sub>{footer}</sub>"]
    return "\n".join(lines)[:MAX_BODY_CHARS]


def with_markers(text: str, markers: Iterable[str]) -> str:
    """`text`, then our markers: after everything else, on lines of their own."""
    return text.rstrip() + "\n\n" + "\n".join(markers)


def inline_review_body(review: dict[str, Any], *, head_sha: str, count: int) -> str:
    verdict = VERDICTS.get(review["verdict"], review["verdict"])
    return (f"**pr-review** ({verdict}): {count} finding(s) on `{head_sha[:12]}`, inline below. "
            "The summary is in pr-review's comment on this pull request.")


# --- posting -----------------------------------------------------------------------------------------
def _error(response: httpx.Response) -> str:
    try:
        data = response.json()
        return f"{data.get('message', '')} {data.get('errors', '')}".strip()[:300]
    except ValueError:
        return response.text[:300]


Written = httpx.Response | dict[str, Any]  # GitHub's answer, or what a look found already there


async def write_once(write: Callable[[], Awaitable[httpx.Response]],
                     find: Callable[[], Awaitable[dict[str, Any] | None]], what: str) -> Written:
    """Send `write`; when GitHub leaves its outcome unclear, look for it with `find` (what GitHub
    holds, found by our marker) before sending it again. Returns GitHub's answer, or what `find`
    found."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return await write()
        except GitHubWriteUncertain as exc:
            log.warning("%s: %s; looking for it before trying again", what, exc.message)
            await asyncio.sleep(WRITE_CHECK_DELAY_S * attempt)
            found = await find()
            if found is not None:
                return found
    raise GitHubTransient(f"GitHub did not confirm {what} after {WRITE_ATTEMPTS} attempts.")


def _data(result: Written, what: str, *, ok: tuple[int, ...] = (200, 201)) -> dict[str, Any]:
    if isinstance(result, dict):
        return result
    if result.status_code not in ok:
        raise GitHubError(f"GitHub refused {what} ({result.status_code}): {_error(result)}")
    return dict(result.json())


@dataclass
class _Inline:
    review_id: int | None = None
    placed: int = 0
    fallback: bool = False
    unplaced: list[PlannedComment] = field(default_factory=list)
    wrote: bool = False


async def _post_inline(github: GitHubClient, ref: PRRef, markers: Markers, login: str | None, *, job_id: str,
                       head_sha: str, review: dict[str, Any], comments: list[PlannedComment]) -> _Inline:
    """The findings not yet on the PR, as one review with comments (or one by one after a 422)."""
    reviews = await github.list_reviews(ref)

    def by_this_job(items: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((r for r in items if _ours(r, login) and job_id in markers.read(r.get("body"), "job")), None)

    existing = await posted_keys(github, ref, login, markers)
    fresh = [c for c in comments if c.key not in existing]
    done = by_this_job(reviews)
    if done is not None:  # this job posted its review before (a resumed run): what is missing was refused
        return _Inline(review_id=int(done["id"]), unplaced=fresh)
    if not fresh:
        return _Inline()
    payloads = [{**c.payload, "body": with_markers(c.payload["body"], [markers.finding(c.key)])} for c in fresh]
    body = with_markers(inline_review_body(review, head_sha=head_sha, count=len(fresh)), [markers.job(job_id)])

    async def find_review() -> dict[str, Any] | None:
        return by_this_job(await github.list_reviews(ref))

    result = await write_once(lambda: github.post_review(ref, {"commit_id": head_sha, "body": body,
                                                               "event": "COMMENT", "comments": payloads}),
                              find_review, "the inline review")
    if isinstance(result, dict) or result.status_code < 300:
        data = _data(result, "the inline review")
        return _Inline(review_id=data.get("id"), placed=len(fresh), wrote=True)
    if result.status_code != 422:
        raise GitHubError(f"GitHub refused the inline review ({result.status_code}): {_error(result)}")

    # One comment GitHub will not place fails the whole review: post them one by one instead.
    outcome = _Inline(fallback=True)
    for comment, payload in zip(fresh, payloads, strict=True):
        answer = await _post_single(github, ref, markers, login, comment, {**payload, "commit_id": head_sha})
        if isinstance(answer, dict) or answer.status_code < 300:
            outcome.placed += 1
            outcome.wrote = True
        elif answer.status_code == 422:
            outcome.unplaced.append(comment)
        else:
            raise GitHubError(f"GitHub refused a review comment ({answer.status_code}): {_error(answer)}")
    return outcome


async def _post_single(github: GitHubClient, ref: PRRef, markers: Markers, login: str | None,
                       comment: PlannedComment, payload: dict[str, Any]) -> Written:
    async def find() -> dict[str, Any] | None:
        return next((c for c in await github.list_review_comments(ref)
                     if _ours(c, login) and comment.key in markers.read(c.get("body"), "finding")), None)

    return await write_once(lambda: github.post_review_comment(ref, payload), find,
                            f"the inline comment on {comment.path}:{comment.line}")


async def publish_review(github: GitHubClient, ref: PRRef, *, job_id: str, head_sha: str,
                         review: dict[str, Any], comments: list[PlannedComment],
                         marker_key: bytes) -> dict[str, Any]:
    """Post `review`'s new inline findings and write the PR's summary comment (idempotent per job);
    returns what was done, for `review["publication"]`: `status` is `posted` (summary comment
    created), `updated` (edited in place) or `already_posted` (this job had done it all)."""
    login = await github.authenticated_login()
    markers = Markers(marker_key, ref)
    inline = await _post_inline(github, ref, markers, login, job_id=job_id, head_sha=head_sha, review=review,
                                comments=comments)

    summary = summary_comment(await github.list_issue_comments(ref), login, markers)
    earlier_jobs = markers.read(summary.get("body"), "job") if summary else []
    publication: dict[str, Any] = {
        "status": "already_posted", "summary_comment_id": summary["id"] if summary else None,
        "html_url": summary.get("html_url") if summary else None, "review_id": inline.review_id,
        "inline_comments": inline.placed, "fallback": inline.fallback,
        "unplaced": [{"path": c.path, "line": c.line, "title": c.title} for c in inline.unplaced]}
    if summary is not None and job_id in earlier_jobs:
        return publication  # this job wrote the summary before (a resumed run)
    jobs = [j for j in earlier_jobs if j != job_id][-(MAX_JOB_MARKERS - 1):] + [job_id]
    text = summary_body(review, head_sha=head_sha, inline=inline.placed, unplaced=inline.unplaced)
    body = with_markers(text, [markers.summary(), markers.head(head_sha), *map(markers.job, jobs)])

    if summary is None:
        async def find_new() -> dict[str, Any] | None:
            found = summary_comment(await github.list_issue_comments(ref), login, markers)
            return found if found and job_id in markers.read(found.get("body"), "job") else None

        data = _data(await write_once(lambda: github.create_issue_comment(ref, body), find_new,
                                      "the summary comment"), "the summary comment")
        status = "posted"
    else:
        comment_id = int(summary["id"])

        async def find_edit() -> dict[str, Any] | None:
            found = await github.issue_comment(ref, comment_id)
            return found if found and job_id in markers.read(found.get("body"), "job") else None

        data = _data(await write_once(lambda: github.update_issue_comment(ref, comment_id, body), find_edit,
                                      "the summary comment's update"), "the summary comment's update")
        status = "updated"
    return {**publication, "status": status, "summary_comment_id": data.get("id"), "html_url": data.get("html_url")}
