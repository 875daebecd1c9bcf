"""What the local GitHub holds (repositories, pull requests, their files, commits, reviews) and
its JSON shapes.

Field names follow api.github.com (REST API version 2022-11-28). Renderers take `base`, the
server's root URL, which is both the API URL and the web URL of the local GitHub.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from prreview.demo._patch import PatchLine, count_changes, git_blob_sha, parse_patch, unified_patch

FileStatus = Literal["added", "removed", "modified", "renamed", "copied", "changed", "unchanged"]
FILE_STATUSES: frozenset[str] = frozenset(
    {"added", "removed", "modified", "renamed", "copied", "changed", "unchanged"})
# GitHub leaves `patch` out when a file's diff is too large to show.
MAX_PATCH_CHARS = 400_000
MAX_LISTED_FILES = 3000  # GET .../pulls/{n}/files lists at most this many
MAX_LISTED_COMMITS = 250  # GET .../pulls/{n}/commits likewise


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fake_sha(*parts: object) -> str:
    return hashlib.sha1("\0".join(map(str, parts)).encode()).hexdigest()


def user_json(base: str, login: str) -> dict[str, Any]:
    uid = int(fake_sha("user", login)[:7], 16)
    return {"login": login, "id": uid, "node_id": f"U_{uid}", "type": "User", "site_admin": False,
            "url": f"{base}/users/{login}", "html_url": f"{base}/{login}",
            "avatar_url": f"{base}/avatars/{login}"}


def to_bytes(content: str | bytes) -> bytes:
    return content if isinstance(content, bytes) else content.encode()


def text_or_bytes(data: bytes | None) -> str | bytes | None:
    """Text files as str, binary ones as bytes (which FakeFile treats as binary: no patch)."""
    if data is None or b"\0" in data:
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


@dataclass
class FakeFile:
    """One changed file of a fake PR: its content at the base and at the head commit.

    `status` is inferred when left out (no base: added, no head: removed, previous_filename:
    renamed, else modified). bytes content or `binary=True` makes it binary (no patch, like
    GitHub); `omit_patch=True` mimics a diff too large to show.
    """

    filename: str
    base: str | bytes | None = None
    head: str | bytes | None = None
    status: FileStatus | None = None
    previous_filename: str | None = None
    binary: bool = False
    omit_patch: bool = False

    def __post_init__(self) -> None:
        if self.status is None:
            if self.base is None:
                self.status = "added"
            elif self.head is None:
                self.status = "removed"
            elif self.previous_filename:
                self.status = "renamed"
            else:
                self.status = "modified"
        if self.status not in FILE_STATUSES:
            raise ValueError(f"unknown file status {self.status!r}")
        if self.status == "renamed" and not self.previous_filename:
            raise ValueError(f"{self.filename}: a renamed file needs previous_filename")
        self.binary = self.binary or isinstance(self.base, bytes) or isinstance(self.head, bytes)

    @property
    def base_path(self) -> str:
        return self.previous_filename or self.filename


@dataclass(frozen=True)
class FileDiff:
    """A FakeFile with what GitHub derives from it, computed once when the PR is stored."""

    file: FakeFile
    sha: str
    patch: str | None
    additions: int
    deletions: int
    lines: tuple[PatchLine, ...]

    @classmethod
    def of(cls, file: FakeFile) -> FileDiff:
        content = file.head if file.head is not None else file.base
        blob = to_bytes(content) if content is not None else b""
        patch: str | None = None
        if not file.binary:
            base_text = file.base if isinstance(file.base, str) else ""
            head_text = file.head if isinstance(file.head, str) else ""
            patch = unified_patch(base_text, head_text) or None
        additions, deletions = count_changes(patch) if patch else (0, 0)
        if file.omit_patch or (patch is not None and len(patch) > MAX_PATCH_CHARS):
            patch = None
        return cls(file, git_blob_sha(blob), patch, additions, deletions,
                   tuple(parse_patch(patch)) if patch else ())

    def to_json(self, base: str, owner: str, repo: str, head_sha: str) -> dict[str, Any]:
        name = self.file.filename
        quoted = quote(name)
        data: dict[str, Any] = {
            "sha": self.sha, "filename": name, "status": self.file.status,
            "additions": self.additions, "deletions": self.deletions,
            "changes": self.additions + self.deletions,
            "blob_url": f"{base}/{owner}/{repo}/blob/{head_sha}/{quoted}",
            "raw_url": f"{base}/{owner}/{repo}/raw/{head_sha}/{quoted}",
            "contents_url": f"{base}/repos/{owner}/{repo}/contents/{quoted}?ref={head_sha}",
        }
        if self.patch is not None:
            data["patch"] = self.patch
        if self.file.previous_filename:
            data["previous_filename"] = self.file.previous_filename
        return data

    def diff_text(self) -> str:
        """This file's part of the `application/vnd.github.diff` media type."""
        file = self.file
        old, new = file.base_path, file.filename
        out = [f"diff --git a/{old} b/{new}"]
        if file.status == "added":
            out.append("new file mode 100644")
        elif file.status == "removed":
            out.append("deleted file mode 100644")
        elif file.status == "renamed":
            out += [f"rename from {old}", f"rename to {new}"]
        if file.binary:
            out.append(f"Binary files a/{old} and b/{new} differ")
        elif self.patch:
            src = "/dev/null" if file.status == "added" else f"a/{old}"
            dst = "/dev/null" if file.status == "removed" else f"b/{new}"
            out += [f"--- {src}", f"+++ {dst}", self.patch]
        return "\n".join(out) + "\n"


@dataclass
class PullRequest:
    """A pull request and its history: one diff per push, commits, and what reviewers posted."""

    owner: str
    repo: str
    number: int
    title: str
    body: str
    author: str
    head_ref: str
    base_ref: str
    base_sha: str
    head_sha: str
    files: dict[str, FakeFile]
    state: str = "open"
    draft: bool = False
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    diffs: dict[str, list[FileDiff]] = field(default_factory=dict)  # head sha -> diff at that push
    commits: list[dict[str, Any]] = field(default_factory=list)  # GitHub JSON, oldest first
    reviews: list[dict[str, Any]] = field(default_factory=list)  # GitHub JSON
    comments: list[dict[str, Any]] = field(default_factory=list)  # review comments, GitHub JSON

    @property
    def current(self) -> list[FileDiff]:
        return self.diffs[self.head_sha]

    def html_url(self, base: str) -> str:
        return f"{base}/{self.owner}/{self.repo}/pull/{self.number}"

    def api_url(self, base: str) -> str:
        return f"{base}/repos/{self.owner}/{self.repo}/pulls/{self.number}"

    def to_json(self, base: str) -> dict[str, Any]:
        full_name = f"{self.owner}/{self.repo}"
        repo = repo_json(base, self.owner, self.repo)
        files = self.current
        pr_id = int(fake_sha("pr", full_name, self.number)[:8], 16)
        return {
            "url": self.api_url(base), "id": pr_id, "node_id": f"PR_{pr_id}",
            "html_url": self.html_url(base), "diff_url": self.html_url(base) + ".diff",
            "patch_url": self.html_url(base) + ".patch",
            "number": self.number, "state": self.state, "locked": False, "title": self.title,
            "user": user_json(base, self.author), "body": self.body,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "closed_at": None, "merged_at": None, "merge_commit_sha": None, "draft": self.draft,
            "labels": [], "requested_reviewers": [], "assignees": [],
            "commits_url": self.api_url(base) + "/commits",
            "review_comments_url": self.api_url(base) + "/comments",
            "head": {"label": f"{self.owner}:{self.head_ref}", "ref": self.head_ref, "sha": self.head_sha,
                     "user": user_json(base, self.owner), "repo": repo},
            "base": {"label": f"{self.owner}:{self.base_ref}", "ref": self.base_ref, "sha": self.base_sha,
                     "user": user_json(base, self.owner), "repo": repo},
            "author_association": "CONTRIBUTOR", "merged": False, "mergeable": True,
            "mergeable_state": "clean", "comments": 0, "review_comments": len(self.comments),
            "maintainer_can_modify": False, "commits": len(self.commits),
            "additions": sum(d.additions for d in files), "deletions": sum(d.deletions for d in files),
            "changed_files": len(files),
        }


def repo_json(base: str, owner: str, repo: str) -> dict[str, Any]:
    full_name = f"{owner}/{repo}"
    rid = int(fake_sha("repo", full_name)[:8], 16)
    return {"id": rid, "node_id": f"R_{rid}", "name": repo, "full_name": full_name, "private": False,
            "owner": user_json(base, owner), "html_url": f"{base}/{full_name}",
            "url": f"{base}/repos/{full_name}", "default_branch": "main", "fork": False}


def commit_json(base: str, owner: str, repo: str, sha: str, message: str, author: str,
                parent: str | None, date: str) -> dict[str, Any]:
    person = {"name": author, "email": f"{author}@users.noreply.example", "date": date}
    return {
        "sha": sha, "node_id": f"C_{sha[:12]}",
        "url": f"{base}/repos/{owner}/{repo}/commits/{sha}",
        "html_url": f"{base}/{owner}/{repo}/commit/{sha}",
        "commit": {"author": person, "committer": person, "message": message,
                   "tree": {"sha": fake_sha("tree", sha), "url": f"{base}/repos/{owner}/{repo}/git/trees/"
                            + fake_sha("tree", sha)},
                   "url": f"{base}/repos/{owner}/{repo}/git/commits/{sha}", "comment_count": 0},
        "author": user_json(base, author), "committer": user_json(base, author),
        "parents": [{"sha": parent, "url": f"{base}/repos/{owner}/{repo}/commits/{parent}"}]
        if parent else [],
    }


@dataclass
class RepoState:
    """One repository: its pull requests, the tree at every commit, and where branches point."""

    prs: dict[int, PullRequest] = field(default_factory=dict)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> path -> bytes
    refs: dict[str, str] = field(default_factory=dict)  # branch -> sha
