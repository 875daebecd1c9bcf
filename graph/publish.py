"""Publishing a review to the PR as one GitHub review with inline comments, and reading back what
earlier reviews published (for idempotency and incremental reviews).

Hidden markers make this safe to repeat:
- the review body carries `<!-- pr-review:job=<job id> -->` and `<!-- pr-review:head=<sha> -->`: a job
  that finds its own marker has posted already (a crash after posting, then a resume), and the next
  job of the PR learns which head was last reviewed;
- every inline comment carries `<!-- pr-review:finding=<key> -->` (see `graph.findings.finding_key`):
  a finding whose key is already on the PR is not posted again.
Head and finding markers count only in reviews and comments written by the token's own user (else
by a bot account, when the token cannot say who it is): anyone can write a marker into a comment,
and a forged one must not make a review skip code. The job marker is trusted from anyone: a job id
is random and never shown on the PR, and the worst a forgery could do is stop a post.

The review is posted as a COMMENT whatever the verdict (shown in its body): approving or blocking
merges is left to people.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from graph.diff import FileDiff
from graph.findings import key_of
from graph.github import GitHubClient
from prreview.errors import GitHubError
from prreview.urls import PRRef

MAX_BODY_CHARS = 60_000  # GitHub refuses bodies over 65,536 characters
_HEAD = re.compile(r"<!-- pr-review:head=([0-9a-f]{7,64}) -->")
_FINDING = re.compile(r"<!-- pr-review:finding=([0-9a-f]{8,64}) -->")
_PROSE_START = re.compile(r"^(?:use|add|remove|replace|consider|catch|pass|move|avoid|call|wrap|make|read|"
                          r"check|validate|ensure|prefer|do not|don't|change|rename|handle|log|return)\b",
                          re.IGNORECASE)
_ASSIGNMENT = re.compile(r"^\s*[\w.\[\]\"']+\s*(?::\s*[\w\[\], .|]+)?\s*=[^=]")
ICONS = {"critical": "🔴", "major": "🟠", "minor": "🟡", "nit": "⚪"}
VERDICTS = {"approve": "✅ looks good to merge", "comment": "💬 comments",
            "request_changes": "⛔ changes requested"}


def job_marker(job_id: str) -> str:
    return f"<!-- pr-review:job={job_id} -->"


def head_marker(sha: str) -> str:
    return f"<!-- pr-review:head={sha} -->"


def finding_marker(key: str) -> str:
    return f"<!-- pr-review:finding={key} -->"


def _trusted(item: dict[str, Any], login: str | None) -> bool:
    user = item.get("user") or {}
    return user.get("login") == login if login else user.get("type") == "Bot"


# --- what was published before -----------------------------------------------------------------------
@dataclass
class PriorReview:
    review_id: int
    head_sha: str
    html_url: str = ""
    posted_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"review_id": self.review_id, "head_sha": self.head_sha, "html_url": self.html_url,
                "posted_keys": self.posted_keys}


def latest_marked_review(reviews: Iterable[dict[str, Any]], login: str | None,
                         commit_shas: list[str]) -> dict[str, Any] | None:
    """Our review of the newest head among the PR's commits (a head force-pushed away counts as
    oldest); among equals the last one listed."""
    order = {sha: i for i, sha in enumerate(commit_shas)}
    best: tuple[int, int, dict[str, Any]] | None = None
    for position, review in enumerate(reviews):
        head = _HEAD.search(review.get("body") or "")
        if head is None or not _trusted(review, login):
            continue
        rank = (order.get(head.group(1), -1), position)
        if best is None or rank > best[:2]:
            best = (*rank, review)
    return best[2] if best else None


async def posted_keys(github: GitHubClient, ref: PRRef, login: str | None) -> set[str]:
    return {match for comment in await github.list_review_comments(ref) if _trusted(comment, login)
            for match in _FINDING.findall(comment.get("body") or "")}


async def find_prior(github: GitHubClient, ref: PRRef, commit_shas: list[str]) -> PriorReview | None:
    """The last review pr-review published on this PR, with the findings it posted inline."""
    login = await github.authenticated_login()
    review = latest_marked_review(await github.list_reviews(ref), login, commit_shas)
    if review is None:
        return None
    head = _HEAD.search(review.get("body") or "")
    assert head is not None
    return PriorReview(int(review["id"]), head.group(1), str(review.get("html_url") or ""),
                       sorted(await posted_keys(github, ref, login)))


# --- rendering ---------------------------------------------------------------------------------------
def looks_like_code(suggestion: str, line_text: str | None) -> bool:
    """Whether a suggestion can be a GitHub suggestion block (it replaces the commented lines)."""
    first = suggestion.strip().splitlines()[0] if suggestion.strip() else ""
    if not first or "`" in suggestion:
        return False
    if _PROSE_START.match(first) and (first.endswith(".") or " the " in first):
        return False
    if first.endswith(".") and len(first.split()) > 4:
        return False
    # a bare expression offered for an assignment would replace the whole line with a fragment
    return not (line_text and _ASSIGNMENT.match(line_text) and "\n" not in suggestion
                and not _ASSIGNMENT.match(suggestion))


def _with_indent(suggestion: str, line_text: str | None) -> str:
    if line_text is None or "\n" in suggestion or suggestion[:1].isspace():
        return suggestion
    return line_text[: len(line_text) - len(line_text.lstrip())] + suggestion


def comment_body(finding: dict[str, Any], key: str, line_text: str | None) -> str:
    lines = [f"{ICONS.get(finding['severity'], '')} **[{finding['severity']}] {finding['title']}** · "
             f"{finding['category']} · found by {finding['source']}", "", finding["body"]]
    suggestion = finding.get("suggestion")
    if suggestion and finding["side"] == "RIGHT" and looks_like_code(suggestion, line_text):
        single_line = line_text if not finding.get("end_line") else None
        lines += ["", "```suggestion", _with_indent(suggestion, single_line), "```"]
    elif suggestion:
        lines += ["", f"**Suggested fix:** {suggestion}"]
    lines += ["", finding_marker(key)]
    return "\n".join(lines)


def comment_payload(finding: dict[str, Any], body: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"path": finding["path"], "side": finding["side"], "body": body}
    if finding.get("end_line"):
        payload.update(start_line=finding["line"], start_side=finding["side"], line=finding["end_line"])
    else:
        payload["line"] = finding["line"]
    return payload


def _counts(findings: list[dict[str, Any]]) -> str:
    counts = {s: sum(f["severity"] == s for f in findings) for s in ICONS}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"


def review_body(review: dict[str, Any], *, job_id: str, head_sha: str, inline: int,
                unplaced: list[dict[str, Any]]) -> str:
    findings = review["findings"]
    verdict = VERDICTS.get(review["verdict"], review["verdict"])
    lines = [f"### pr-review: {verdict}", "", review["summary"], "",
             f"**Findings:** {_counts(findings)}" + (f" ({inline} inline below)" if inline else "")]
    if unplaced:
        lines += ["", f"<details><summary>Findings not placed on the diff ({len(unplaced)})</summary>", ""]
        lines += [f"- {ICONS.get(f['severity'], '')} **[{f['severity']}] {f['title']}** — "
                  f"`{f['path']}:{f['line']}`" for f in unplaced]
        lines += ["", "</details>"]
    if review["files_skipped"]:
        lines += ["", f"<details><summary>Not reviewed ({len(review['files_skipped'])} files)</summary>", ""]
        lines += [f"- `{s['path']}`: {s['reason']}" for s in review["files_skipped"][:200]]
        lines += ["", "</details>"]
    tools = [f"{a['name']} ({a['status']}, {a['kept']} on changed lines)"
             for a in review.get("analyzers", [])]
    footer = f"Reviewed `{head_sha[:12]}` with `{review['model']}`"
    if review.get("incremental"):
        footer += f" · changes since `{review['incremental']['since'][:12]}` only"
    if tools:
        footer += " · static analysis: " + ", ".join(tools)
    lines += ["", f"<sub>{footer}</sub>"]
    text = "\n".join(lines)[:MAX_BODY_CHARS]
    return f"{text}\n\n{job_marker(job_id)}\n{head_marker(head_sha)}"


def updated_body(previous: str, review: dict[str, Any], *, job_id: str, head_sha: str) -> str:
    """A prior review's body, told that a later push was reviewed and brought nothing new."""
    kept = _HEAD.sub("", previous).rstrip()  # earlier job markers stay: those jobs stay idempotent
    first_line = review["summary"].splitlines()[0] if review["summary"] else ""
    text = f"{kept}\n\n---\n**Update for `{head_sha[:12]}`:** {first_line} No new findings."
    if len(text) > MAX_BODY_CHARS:
        text = text[-MAX_BODY_CHARS:]
    return f"{text}\n{job_marker(job_id)}\n{head_marker(head_sha)}"


# --- posting -----------------------------------------------------------------------------------------
def _error(response: Any) -> str:
    try:
        data = response.json()
        return f"{data.get('message', '')} {data.get('errors', '')}".strip()[:300]
    except ValueError:
        return response.text[:300]


async def publish_review(github: GitHubClient, ref: PRRef, *, job_id: str, head_sha: str,
                         review: dict[str, Any], diffs: dict[str, FileDiff],
                         prior: dict[str, Any] | None) -> dict[str, Any]:
    """Post `review` (idempotent per job); returns what was done, for `review["publication"]`."""
    login = await github.authenticated_login()
    reviews = await github.list_reviews(ref)
    # Job ids are random and never shown on the PR: a review carrying ours is ours, whoever the
    # token acts as (an anonymous run against GitHub Enterprise's or a test's server included).
    mine = next((r for r in reviews if job_marker(job_id) in (r.get("body") or "")), None)
    if mine is not None:
        return {"status": "already_posted", "review_id": mine["id"], "html_url": mine.get("html_url"),
                "inline_comments": None, "fallback": False, "unplaced": []}
    existing = await posted_keys(github, ref, login)
    comments = []
    for finding in review["findings"]:
        key = key_of(finding, diffs)
        if key in existing:
            continue
        diff = diffs.get(finding["path"])
        line_text = diff.line_text(finding["line"], finding["side"]) if diff else None
        comments.append((finding, comment_payload(finding, comment_body(finding, key, line_text))))

    previous = next((r for r in reviews if prior and r["id"] == prior.get("review_id")), None)
    if not comments and previous is not None:
        updated = await github.update_review(ref, int(previous["id"]),
                                             updated_body(previous.get("body") or "", review, job_id=job_id,
                                                          head_sha=head_sha))
        return {"status": "updated", "review_id": updated.get("id", previous["id"]),
                "html_url": updated.get("html_url") or previous.get("html_url"), "inline_comments": 0,
                "fallback": False, "unplaced": []}

    body = review_body(review, job_id=job_id, head_sha=head_sha, inline=len(comments), unplaced=[])
    response = await github.post_review(ref, {"commit_id": head_sha, "body": body, "event": "COMMENT",
                                              "comments": [payload for _, payload in comments]})
    if response.status_code < 300:
        data = response.json()
        return {"status": "posted", "review_id": data.get("id"), "html_url": data.get("html_url"),
                "inline_comments": len(comments), "fallback": False, "unplaced": []}
    if response.status_code != 422 or not comments:
        raise GitHubError(f"GitHub refused the review ({response.status_code}): {_error(response)}")

    # One comment GitHub will not place fails the whole review: post them one by one instead.
    placed, unplaced = 0, []
    for finding, payload in comments:
        answer = await github.post_review_comment(ref, {**payload, "commit_id": head_sha})
        if answer.status_code < 300:
            placed += 1
        elif answer.status_code == 422:
            unplaced.append(finding)
        else:
            raise GitHubError(f"GitHub refused a review comment ({answer.status_code}): {_error(answer)}")
    body = review_body(review, job_id=job_id, head_sha=head_sha, inline=placed, unplaced=unplaced)
    response = await github.post_review(ref, {"commit_id": head_sha, "body": body, "event": "COMMENT"})
    if response.status_code >= 300:
        raise GitHubError(f"GitHub refused the review ({response.status_code}): {_error(response)}")
    data = response.json()
    return {"status": "posted", "review_id": data.get("id"), "html_url": data.get("html_url"),
            "inline_comments": placed, "fallback": True,
            "unplaced": [{"path": f["path"], "line": f["line"], "title": f["title"]} for f in unplaced]}
