"""Posting to a pull request: reviews with inline comments, single comments and replies, review edits.

Each function takes the stored `PullRequest` and the request's JSON payload, changes the PR, and
returns the GitHub JSON of what it created; invalid input raises the `Reply` GitHub would give
(422 "Line could not be resolved" and its kin). Called under the fake's lock.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from prreview.demo._github_http import error, not_found, unprocessable
from prreview.demo._github_model import FileDiff, PullRequest, now_iso
from prreview.demo._patch import PatchLine
from tests.fakes.github._accounts import account_json

REVIEW_STATES = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED",
                 None: "PENDING", "": "PENDING"}

Anchor = tuple[FileDiff, PatchLine, PatchLine | None]  # the file, the (last) line, the first line of a range

_ids = itertools.count(1_000_001)


def next_id() -> int:
    """Unique ids for reviews and comments (thread-safe: itertools.count is atomic in CPython)."""
    return next(_ids)


def find_line(lines: list[PatchLine], line: int, side: str) -> PatchLine | None:
    """The patch line a review comment at (line, side) anchors to, or None when GitHub says
    "Line could not be resolved": RIGHT takes added and context lines, LEFT removed and context."""
    for candidate in lines:
        number = candidate.new_line if side == "RIGHT" else candidate.old_line
        if number == line:
            return candidate
    return None


def diff_hunk(patch: str, anchor: PatchLine) -> str:
    """GitHub's `diff_hunk` of a comment: its hunk's header down to the commented line."""
    lines = patch.split("\n")
    return "\n".join(lines[anchor.hunk_start:anchor.position + 1])


def post_review(pr: PullRequest, payload: Any, base: str, login: str) -> dict[str, Any]:
    """`POST .../pulls/{n}/reviews`: the review, its comments all placed or none (as GitHub)."""
    if not isinstance(payload, dict):
        raise error(400, "Problems parsing JSON")
    event = payload.get("event")
    if event not in REVIEW_STATES:
        raise unprocessable(f"Variable $event of type PullRequestReviewEvent was provided invalid value: {event!r}")
    body = payload.get("body") or ""
    comments = payload.get("comments") or []
    if not isinstance(comments, list):
        raise unprocessable("comments must be an array")
    if event == "REQUEST_CHANGES" and not body:
        raise unprocessable("Review body is required to request changes")
    commit_id = payload.get("commit_id") or pr.head_sha
    diffs = _diff_at(pr, commit_id)
    anchors = [_anchor(diffs, c) for c in comments]  # all or nothing, as GitHub
    rid = next_id()
    review = {
        "id": rid, "node_id": f"PRR_{rid}", "user": account_json(base, login), "body": body,
        "state": REVIEW_STATES[event], "html_url": f"{pr.html_url(base)}#pullrequestreview-{rid}",
        "pull_request_url": pr.api_url(base), "author_association": "COLLABORATOR",
        "submitted_at": now_iso() if event else None, "commit_id": commit_id,
        "_links": {"html": {"href": f"{pr.html_url(base)}#pullrequestreview-{rid}"},
                   "pull_request": {"href": pr.api_url(base)}},
    }
    pr.reviews.append(review)
    pr.comments += [_comment_json(base, login, pr, a, c, commit_id, rid)
                    for a, c in zip(anchors, comments, strict=True)]
    return review


def update_review(review: dict[str, Any], payload: Any) -> dict[str, Any]:
    """`PUT .../pulls/{n}/reviews/{id}`: a new body for a posted review."""
    if not isinstance(payload, dict) or not isinstance(payload.get("body"), str):
        raise unprocessable("body is required")
    review["body"] = payload["body"]
    return review


def post_comment(pr: PullRequest, payload: Any, base: str, login: str) -> dict[str, Any]:
    """`POST .../pulls/{n}/comments`: a single inline comment, or a reply (`in_reply_to`)."""
    if not isinstance(payload, dict):
        raise error(400, "Problems parsing JSON")
    reply_to = payload.get("in_reply_to")
    if reply_to is not None:
        parent = next((c for c in pr.comments if c["id"] == reply_to), None)
        if parent is None:
            raise not_found()
        payload = {**payload, "path": parent["path"], "line": parent["line"], "side": parent["side"],
                   "commit_id": parent["commit_id"]}
    if not payload.get("commit_id"):
        raise unprocessable("commit_id is required")
    commit_id = payload["commit_id"]
    anchor = _anchor(_diff_at(pr, commit_id), payload)
    comment = _comment_json(base, login, pr, anchor, payload, commit_id, next_id())
    pr.comments.append(comment)
    return comment


def reviews_with_comments(pr: PullRequest) -> list[dict[str, Any]]:
    """The PR's reviews, as GitHub returns them, each with its `comments` added (copies)."""
    out = []
    for review in pr.reviews:
        item = copy.deepcopy(review)
        item["comments"] = [copy.deepcopy(c) for c in pr.comments if c["pull_request_review_id"] == review["id"]]
        out.append(item)
    return out


def _diff_at(pr: PullRequest, commit_id: Any) -> list[FileDiff]:
    """The PR's diff as of `commit_id` (the head of the push that contained it)."""
    if commit_id is None or commit_id == pr.head_sha:
        return pr.current
    shas = [c["sha"] for c in pr.commits]
    if not isinstance(commit_id, str) or commit_id not in shas:
        raise unprocessable(f"No commit found for SHA: {commit_id}")
    for sha in shas[shas.index(commit_id):]:
        if sha in pr.diffs:
            return pr.diffs[sha]
    return pr.current


def _anchor(diffs: list[FileDiff], comment: Any) -> Anchor:
    """Where GitHub would place an inline comment, or the 422 it answers when it cannot."""
    if not isinstance(comment, dict) or not isinstance(comment.get("body"), str):
        raise unprocessable("comment body is required")
    path = comment.get("path")
    diff = next((d for d in diffs if d.file.filename == path), None)
    if diff is None:
        raise unprocessable("Path could not be resolved")
    side = comment.get("side") or "RIGHT"
    if side not in ("LEFT", "RIGHT"):
        raise unprocessable(f"side must be LEFT or RIGHT, not {side!r}")
    end: PatchLine | None
    if isinstance(comment.get("position"), int) and comment.get("line") is None:
        end = next((ln for ln in diff.lines if ln.position == comment["position"]), None)
    elif isinstance(comment.get("line"), int):
        end = find_line(list(diff.lines), comment["line"], side)
    else:
        raise unprocessable("line or position is required")
    if end is None:
        raise unprocessable("Line could not be resolved")
    start: PatchLine | None = None
    if comment.get("start_line") is not None:
        start_side = comment.get("start_side") or side
        start = find_line(list(diff.lines), comment["start_line"], start_side) \
            if isinstance(comment["start_line"], int) else None
        if start is None:
            raise unprocessable("Start line could not be resolved")
        if start.hunk != end.hunk:
            raise unprocessable("pull_request_review_thread.start_line must be part of the same hunk as the line.")
        if start.position >= end.position:
            raise unprocessable("pull_request_review_thread.start_line must precede the end line.")
    return diff, end, start


def _comment_json(base: str, login: str, pr: PullRequest, anchor: Anchor, comment: dict[str, Any],
                  commit_id: str, review_id: int) -> dict[str, Any]:
    diff, end, start = anchor
    cid = next_id()
    created = now_iso()
    side = "LEFT" if end.kind == "-" else comment.get("side") or "RIGHT"
    line = end.old_line if side == "LEFT" else end.new_line
    start_side: str | None = None
    start_line: int | None = None
    if start is not None:
        start_side = "LEFT" if start.kind == "-" else comment.get("start_side") or side
        start_line = start.old_line if start_side == "LEFT" else start.new_line
    data: dict[str, Any] = {
        "url": f"{base}/repos/{pr.owner}/{pr.repo}/pulls/comments/{cid}", "id": cid,
        "node_id": f"PRRC_{cid}", "pull_request_review_id": review_id,
        "diff_hunk": diff_hunk(diff.patch or "", end), "path": diff.file.filename,
        "position": end.position if commit_id == pr.head_sha else None, "original_position": end.position,
        "commit_id": commit_id, "original_commit_id": commit_id,
        "user": account_json(base, login), "body": comment["body"],
        "created_at": created, "updated_at": created,
        "html_url": f"{pr.html_url(base)}#discussion_r{cid}", "pull_request_url": pr.api_url(base),
        "author_association": "COLLABORATOR", "start_line": start_line, "original_start_line": start_line,
        "start_side": start_side, "line": line, "original_line": line, "side": side,
        "subject_type": "line",
    }
    if comment.get("in_reply_to") is not None:
        data["in_reply_to_id"] = comment["in_reply_to"]
    return data


# --- conversation (issue) comments ------------------------------------------------------------------
def issue_comment_json(pr: PullRequest, base: str, login: str, body: str) -> dict[str, Any]:
    """A new conversation comment on the PR, as GitHub returns it."""
    cid = next_id()
    created = now_iso()
    return {
        "id": cid, "node_id": f"IC_{cid}", "url": f"{base}/repos/{pr.owner}/{pr.repo}/issues/comments/{cid}",
        "html_url": f"{pr.html_url(base)}#issuecomment-{cid}",
        "issue_url": f"{base}/repos/{pr.owner}/{pr.repo}/issues/{pr.number}", "body": body,
        "user": account_json(base, login), "created_at": created, "updated_at": created,
        "author_association": "COLLABORATOR",
    }


def post_issue_comment(comments: list[dict[str, Any]], pr: PullRequest, payload: Any, base: str,
                       login: str) -> dict[str, Any]:
    """`POST .../issues/{n}/comments`: a conversation comment (`body` required)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("body"), str) or not payload["body"]:
        raise unprocessable("body is required")
    if len(payload["body"]) > 65_536:
        raise unprocessable("Body is too long (maximum is 65536 characters)")
    comment = issue_comment_json(pr, base, login, payload["body"])
    comments.append(comment)
    return comment


def update_issue_comment(comment: dict[str, Any], payload: Any) -> dict[str, Any]:
    """`PATCH .../issues/comments/{id}`: a new body for a conversation comment."""
    if not isinstance(payload, dict) or not isinstance(payload.get("body"), str) or not payload["body"]:
        raise unprocessable("body is required")
    if len(payload["body"]) > 65_536:
        raise unprocessable("Body is too long (maximum is 65536 characters)")
    comment["body"] = payload["body"]
    comment["updated_at"] = now_iso()
    return comment
