"""GitHub's webhook deliveries: the payloads of `pull_request`, `issue_comment` and `ping`, and a
delivery signed as GitHub signs it.

A delivery is a POST of the payload's JSON (UTF-8, compact, non-ASCII kept as is, so a receiver
that checks a re-encoded body instead of the raw one fails) with GitHub's headers:
`X-GitHub-Event`, `X-GitHub-Delivery` (a UUID), `X-GitHub-Hook-ID`,
`X-GitHub-Hook-Installation-Target-Type`/`-ID`, `X-Hub-Signature-256: sha256=<HMAC-SHA256 of
the raw body, hex>` (and the older `X-Hub-Signature: sha1=...`), `User-Agent: GitHub-Hookshot/...`,
`Content-Type: application/json`. Without a secret GitHub sends no signature headers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any

from prreview.demo._github_model import PullRequest, fake_sha, now_iso, repo_json
from tests.fakes.github._accounts import account_json
from tests.fakes.github._reviews import next_id

HOOKSHOT_USER_AGENT = "GitHub-Hookshot/2c3b4a1"
PR_ACTIONS = frozenset({"opened", "reopened", "synchronize", "ready_for_review", "closed", "edited",
                        "converted_to_draft", "labeled", "assigned", "review_requested"})
AUTHOR_ASSOCIATIONS = frozenset({"OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR",
                                 "FIRST_TIMER", "MANNEQUIN", "NONE"})
ZEN = "Design for failure."


@dataclass
class Delivery:
    """One delivery the fake sent, and how the receiver answered."""

    id: str
    event: str
    url: str
    status: int | None = None


def signature_256(secret: str | bytes, body: bytes) -> str:
    """`X-Hub-Signature-256`: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def delivery_headers(event: str, body: bytes, *, secret: str | bytes | None, delivery_id: str | None,
                     hook_id: int, target_type: str, target_id: int) -> dict[str, str]:
    """The headers GitHub sends with a delivery of `body`."""
    headers = {
        "Accept": "*/*", "Content-Type": "application/json", "User-Agent": HOOKSHOT_USER_AGENT,
        "X-GitHub-Event": event, "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": str(hook_id), "X-GitHub-Hook-Installation-Target-Type": target_type,
        "X-GitHub-Hook-Installation-Target-ID": str(target_id),
    }
    if secret is not None:
        key = secret.encode() if isinstance(secret, str) else secret
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest()
        headers["X-Hub-Signature-256"] = signature_256(key, body)
    return headers


# --- payloads -------------------------------------------------------------------------------------
def _common(base: str, owner: str, repo: str, sender: str, installation_id: int | None) -> dict[str, Any]:
    data: dict[str, Any] = {"repository": repo_json(base, owner, repo), "sender": account_json(base, sender)}
    data["repository"]["owner"] = account_json(base, owner)
    if installation_id is not None:
        data["installation"] = {
            "id": installation_id, "node_id": f"MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u{installation_id}"}
    return data


def apply_action(pr: PullRequest, action: str) -> None:
    """What GitHub did to the PR before it sent the event (so REST reads agree with it)."""
    if action == "closed":
        pr.state = "closed"
    elif action == "reopened":
        pr.state = "open"
    elif action == "ready_for_review":
        pr.draft = False
    elif action == "converted_to_draft":
        pr.draft = True
    pr.updated_at = now_iso()


def pull_request_payload(base: str, pr: PullRequest, action: str, *, sender: str | None,
                         installation_id: int | None, before: str | None = None,
                         merged: bool = False) -> dict[str, Any]:
    """A `pull_request` event of the stored PR as it is now."""
    if action not in PR_ACTIONS:
        raise ValueError(f"not a pull_request action GitHub sends: {action!r}")
    pull = pr.to_json(base)
    pull["user"] = account_json(base, pr.author)
    if pr.state == "closed":
        pull["closed_at"] = pr.updated_at
        pull["merged"] = merged
        pull["merged_at"] = pr.updated_at if merged else None
    data: dict[str, Any] = {"action": action, "number": pr.number, "pull_request": pull,
                            **_common(base, pr.owner, pr.repo, sender or pr.author, installation_id)}
    if action == "synchronize":
        parents = [c["parent"] for c in pr.commits if c["sha"] == pr.head_sha]
        data["before"] = before or (parents[0] if parents and parents[0] else pr.base_sha)
        data["after"] = pr.head_sha
    return data


def issue_json(base: str, owner: str, repo: str, number: int, *, title: str, author: str, state: str,
               body: str, comments: int, pull: PullRequest | None) -> dict[str, Any]:
    """The `issue` of an `issue_comment` event: a PR's issue has a `pull_request` key, an issue has none."""
    iid = int(fake_sha("issue", owner, repo, number)[:8], 16)
    api = f"{base}/repos/{owner}/{repo}/issues/{number}"
    web = f"{base}/{owner}/{repo}/{'pull' if pull is not None else 'issues'}/{number}"
    data: dict[str, Any] = {
        "url": api, "repository_url": f"{base}/repos/{owner}/{repo}", "comments_url": f"{api}/comments",
        "html_url": web, "id": iid, "node_id": f"I_{iid}", "number": number, "title": title,
        "user": account_json(base, author), "labels": [], "state": state, "locked": False, "assignee": None,
        "assignees": [], "comments": comments, "created_at": now_iso(), "updated_at": now_iso(),
        "closed_at": None, "author_association": "CONTRIBUTOR", "body": body,
    }
    if pull is not None:
        data["draft"] = pull.draft
        data["pull_request"] = {"url": pull.api_url(base), "html_url": pull.html_url(base),
                                "diff_url": pull.html_url(base) + ".diff",
                                "patch_url": pull.html_url(base) + ".patch", "merged_at": None}
    return data


def comment_json(base: str, owner: str, repo: str, number: int, pr: PullRequest | None, login: str,
                 body: str, association: str) -> dict[str, Any]:
    """A conversation comment on PR `pr` (or issue `number` when None), as GitHub shows it."""
    cid = next_id()
    web = pr.html_url(base) if pr is not None else f"{base}/{owner}/{repo}/issues/{number}"
    created = now_iso()
    return {"id": cid, "node_id": f"IC_{cid}", "url": f"{base}/repos/{owner}/{repo}/issues/comments/{cid}",
            "html_url": f"{web}#issuecomment-{cid}", "issue_url": f"{base}/repos/{owner}/{repo}/issues/{number}",
            "body": body, "user": account_json(base, login), "created_at": created, "updated_at": created,
            "author_association": association, "performed_via_github_app": None}


def issue_comment_payload(base: str, owner: str, repo: str, issue: dict[str, Any], comment: dict[str, Any], *,
                          action: str, sender: str, installation_id: int | None) -> dict[str, Any]:
    """An `issue_comment` event (`created`, `edited`, `deleted`)."""
    if action not in ("created", "edited", "deleted"):
        raise ValueError(f"not an issue_comment action GitHub sends: {action!r}")
    return {"action": action, "issue": issue, "comment": comment,
            **_common(base, owner, repo, sender, installation_id)}


def ping_payload(base: str, url: str, *, hook_id: int, app_id: int | None,
                 repository: tuple[str, str] | None, sender: str) -> dict[str, Any]:
    """A `ping`, sent when a webhook is created: an App's hook (`type: App`) or a repository's."""
    created = now_iso()
    hook: dict[str, Any] = {
        "type": "App" if app_id is not None else "Repository", "id": hook_id, "name": "web", "active": True,
        "events": ["issue_comment", "pull_request"],
        "config": {"content_type": "json", "insecure_ssl": "0", "url": url},
        "updated_at": created, "created_at": created,
        "last_response": {"code": None, "status": "unused", "message": None},
    }
    data: dict[str, Any] = {"zen": ZEN, "hook_id": hook_id, "hook": hook}
    if app_id is not None:
        hook["app_id"] = app_id
    if repository is not None:
        owner, repo = repository
        hook["url"] = f"{base}/repos/{owner}/{repo}/hooks/{hook_id}"
        data.update(_common(base, owner, repo, sender, None))
    return data
