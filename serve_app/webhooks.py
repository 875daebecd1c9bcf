"""GitHub's webhook deliveries: the signature, and what each event asks of pr-review.

Only what the service reads from a delivery is modelled (pydantic, extra fields ignored); a
delivery without those fields is malformed (400), whatever GitHub may add to it later.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from prreview.errors import BadRequest, PRReviewError
from prreview.urls import PRRef, parse_pr_url

REVIEW_ACTIONS = frozenset({"opened", "reopened", "synchronize", "ready_for_review"})
TRUSTED_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
COMMAND = "/review"


class InvalidSignature(PRReviewError):
    code = "invalid_signature"
    http_status = 401


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256` is `sha256=<hex HMAC-SHA256 of the raw body>`; compared in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(expected.encode(), header.strip().encode())


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _User(_Model):
    login: str
    type: str = "User"

    @property
    def bot(self) -> bool:
        return self.type == "Bot" or self.login.endswith("[bot]")


class _Installation(_Model):
    id: int


class _Head(_Model):
    sha: str


class _PullRequest(_Model):
    number: int
    html_url: str
    state: str
    draft: bool = False
    head: _Head
    user: _User


class PullRequestEvent(_Model):
    action: str
    pull_request: _PullRequest
    sender: _User
    installation: _Installation | None = None


class _IssuePR(_Model):
    html_url: str


class _Issue(_Model):
    number: int
    pull_request: _IssuePR | None = None  # present only when the issue is a pull request


class _Comment(_Model):
    body: str
    author_association: str
    user: _User


class IssueCommentEvent(_Model):
    action: str
    issue: _Issue
    comment: _Comment
    installation: _Installation | None = None


@dataclass(frozen=True)
class ReviewRequest:
    """A delivery that asks for a review (always published: `post: true`)."""

    ref: PRRef
    head_sha: str | None  # the pushed head; None for a `/review` comment (the review fetches it)
    installation_id: int | None


@dataclass(frozen=True)
class Ignored:
    reason: str


def interpret(event: str, payload: Any, *, web_host: str) -> ReviewRequest | Ignored:
    """What a verified delivery asks for. Raises BadRequest for a malformed payload (or a PR on
    another host than the configured GitHub's)."""
    if event == "ping":
        return Ignored("ping")
    if event == "pull_request":
        return _pull_request(_parse(PullRequestEvent, payload), web_host)
    if event == "issue_comment":
        return _issue_comment(_parse(IssueCommentEvent, payload), web_host)
    return Ignored(f"the {event!r} event starts nothing")


def _parse(model: type[_Model], payload: Any) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise BadRequest(f"Malformed delivery: '{where}': {first['msg']}.") from exc


def _pull_request(event: PullRequestEvent, web_host: str) -> ReviewRequest | Ignored:
    pr = event.pull_request
    if event.action not in REVIEW_ACTIONS:
        return Ignored(f"pull_request action {event.action!r} starts no review")
    if pr.state != "open":
        return Ignored(f"the pull request is {pr.state}")
    if pr.draft:
        return Ignored("the pull request is a draft")
    if pr.user.bot or event.sender.bot:
        return Ignored("pull requests from bot accounts are not reviewed")
    ref = parse_pr_url(pr.html_url, web_host=web_host)
    return ReviewRequest(ref, pr.head.sha, event.installation.id if event.installation else None)


def _issue_comment(event: IssueCommentEvent, web_host: str) -> ReviewRequest | Ignored:
    if event.action != "created":
        return Ignored(f"issue_comment action {event.action!r} starts no review")
    if event.issue.pull_request is None:
        return Ignored("the comment is on an issue, not a pull request")
    lines = event.comment.body.strip().splitlines()
    first = lines[0].strip() if lines else ""
    if first != COMMAND and not first.startswith(COMMAND + " "):
        return Ignored("the comment is not a /review command")
    if event.comment.author_association not in TRUSTED_ASSOCIATIONS:
        return Ignored(f"{event.comment.author_association} commenters may not request reviews")
    if event.comment.user.bot:
        return Ignored("bot accounts may not request reviews")
    ref = parse_pr_url(event.issue.pull_request.html_url, web_host=web_host)
    return ReviewRequest(ref, None, event.installation.id if event.installation else None)
