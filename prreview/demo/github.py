"""A read-only GitHub for `pr-review demo`: the REST reads a review makes, and the PR's web page.

`DemoGitHub` serves the pull requests stored with `add_pr` on 127.0.0.1, in a background thread:
the PR (JSON or diff), its files and commits, a commit, a compare of two commits, file contents
at a ref, the reviews and review comments on it, the authenticated user, and the PR's web page.
Field names follow api.github.com (REST API version 2022-11-28). Its root URL is the
`GITHUB_API_URL`; PR web URLs are `{root}/{owner}/{repo}/pull/{n}`.

Subclasses add routes (`_routes`) and checks (`_admit`, `_respond`): the test suite's fake adds
writes, faults, rate limits and a record of requests that way.
"""

from __future__ import annotations

import base64
import html
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from prreview.demo._github_http import (
    API_VERSION,
    PRNotFound,
    Reply,
    base_url,
    error,
    int_param,
    not_found,
    paginate,
)
from prreview.demo._github_model import (
    MAX_LISTED_COMMITS,
    MAX_LISTED_FILES,
    FakeFile,
    FileDiff,
    PullRequest,
    RepoState,
    commit_json,
    fake_sha,
    now_iso,
    repo_json,
    text_or_bytes,
    to_bytes,
    user_json,
)
from prreview.demo._patch import git_blob_sha
from prreview.demo._server import BackgroundServer, Startable

__all__ = ["DemoGitHub", "FakeFile", "Handler"]

MAX_CONTENT_BYTES = 1_000_000  # the contents API sends no content above this
MAX_COMPARE_FILES = 300  # a compare lists at most this many files, on its first page only
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
PULL = "/repos/{owner}/{repo}/pulls/{number:int}"

# handler(request, payload, **path_params): called under the lock; raises Reply to answer an error.
Handler = Callable[..., Response]


class DemoGitHub(Startable):
    """GitHub's REST reads on 127.0.0.1. Thread-safe: PRs may be added while the server answers."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, reviewer_login: str = "pr-review-bot") -> None:
        self.reviewer_login = reviewer_login  # who `GET /user` says the caller is
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], RepoState] = {}
        self.server = BackgroundServer(self._build_app(), host=host, port=port)

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        """The API root, to use as GITHUB_API_URL (also the web root of PR URLs)."""
        return self.server.url

    def pr_url(self, owner: str, repo: str, number: int) -> str:
        return f"{self.url}/{owner}/{repo}/pull/{number}"

    # --- content --------------------------------------------------------------------------------
    def add_pr(self, owner: str, repo: str, number: int, files: Sequence[FakeFile], *, title: str = "Update",
               body: str = "", commits: Sequence[str] | None = None, head_sha: str | None = None,
               base_sha: str | None = None, author: str = "dev-alice", head_ref: str | None = None,
               base_ref: str = "main", draft: bool = False) -> str:
        """Store a PR (replacing one with the same number); returns its head sha.

        `commits` are commit messages, oldest first; the last one's sha is the head sha.
        """
        with self._lock:
            state = self._repos.setdefault((owner, repo), RepoState())
            base_sha = base_sha or fake_sha(owner, repo, number, "base", time.time_ns())
            pr = PullRequest(owner=owner, repo=repo, number=number, title=title, body=body, author=author,
                             head_ref=head_ref or f"feature/pr-{number}", base_ref=base_ref,
                             base_sha=base_sha, head_sha=base_sha, files={}, draft=draft)
            state.prs[number] = pr
            # The base starts as the branch's current tree, so files stored there before stay.
            branch_tree = state.snapshots.get(state.refs.get(base_ref, ""), {})
            state.refs[base_ref] = base_sha
            state.snapshots.setdefault(base_sha, dict(branch_tree))
            messages = list(commits) if commits else [f"Update {len(files)} file(s)"]
            return self._apply_push(state, pr, files, (), messages, head_sha)

    def head_sha(self, owner: str, repo: str, number: int) -> str:
        with self._lock:
            return self._lookup(owner, repo, number)[1].head_sha

    def _apply_push(self, state: RepoState, pr: PullRequest, files: Sequence[FakeFile], remove: Sequence[str],
                    messages: list[str], head_sha: str | None) -> str:
        """New commits on the PR's branch: `files` replace or join its changed files (by filename),
        `remove` drops some. Returns the new head sha. Called under the lock."""
        if not messages:
            raise ValueError("a push needs at least one commit message")
        for name in remove:
            pr.files.pop(name, None)
        for file in files:
            pr.files[file.filename] = file
        base_snapshot = state.snapshots[pr.base_sha]
        head_snapshot = dict(base_snapshot)
        for file in pr.files.values():
            if file.base is not None:
                base_snapshot.setdefault(file.base_path, to_bytes(file.base))
            if file.status in ("renamed", "removed"):
                head_snapshot.pop(file.base_path, None)
            if file.head is not None:
                head_snapshot[file.filename] = to_bytes(file.head)
        parent = pr.head_sha
        date = now_iso()
        new_commits = []
        for index, message in enumerate(messages):
            last = index == len(messages) - 1
            sha = head_sha if (last and head_sha) else fake_sha(pr.owner, pr.repo, pr.number, message,
                                                               len(pr.commits) + index, time.time_ns())
            new_commits.append((sha, message, parent))
            parent = sha
        new_head = new_commits[-1][0]
        pr.diffs[new_head] = [FileDiff.of(file) for file in pr.files.values()]
        for sha, message, parent_sha in new_commits:
            pr.commits.append({"sha": sha, "message": message, "author": pr.author,
                               "parent": parent_sha, "date": date})
            state.snapshots[sha] = head_snapshot
        pr.head_sha = new_head
        pr.updated_at = date
        state.refs[pr.head_ref] = new_head
        return new_head

    def _lookup(self, owner: str, repo: str, number: int | None = None) -> tuple[RepoState, PullRequest]:
        state = self._repos.get((owner, repo))
        if state is None or number not in state.prs:
            raise PRNotFound(f"no PR {owner}/{repo}#{number}")
        return state, state.prs[number]

    # --- HTTP -----------------------------------------------------------------------------------
    def _route(self, path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, self._endpoint(handler), methods=methods)

    def _routes(self) -> list[Route]:
        """The endpoints served; a subclass extends the list (a catch-all 404 comes after them)."""
        return [
            self._route("/user", self._get_user, ["GET"]),
            self._route("/repos/{owner}/{repo}", self._get_repo, ["GET"]),
            self._route(PULL, self._get_pull, ["GET"]),
            self._route(PULL + "/files", self._get_files, ["GET"]),
            self._route(PULL + "/commits", self._get_commits, ["GET"]),
            self._route(PULL + "/reviews", self._get_reviews, ["GET"]),
            self._route(PULL + "/reviews/{review_id:int}", self._get_review, ["GET"]),
            self._route(PULL + "/comments", self._get_comments, ["GET"]),
            self._route("/repos/{owner}/{repo}/commits/{sha}", self._get_commit, ["GET"]),
            self._route("/repos/{owner}/{repo}/compare/{basehead}", self._get_compare, ["GET"]),
            self._route("/repos/{owner}/{repo}/contents/{path:path}", self._get_contents, ["GET"]),
            self._route("/{owner}/{repo}/pull/{number:int}", self._get_pr_page, ["GET"]),
            self._route("/{owner}/{repo}/raw/{sha}/{path:path}", self._get_raw, ["GET"]),
        ]

    def _build_app(self) -> Starlette:
        return Starlette(routes=[*self._routes(), self._route("/{rest:path}", self._unknown, ALL_METHODS)])

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                payload: Any = json.loads(raw) if raw else None
            except ValueError:
                payload = raw.decode(errors="replace")
            return await self._respond(request, handler, payload)

        return endpoint

    async def _respond(self, request: Request, handler: Handler, payload: Any) -> Response:
        """Admit the request, then let `handler` answer it, under the lock."""
        try:
            with self._lock:
                self._admit(request)
                response = handler(request, payload, **request.path_params)
        except Reply as reply:
            response = reply.response
        except PRNotFound:
            response = not_found().response
        response.headers.setdefault("x-github-api-version-selected", API_VERSION)
        return response

    def _admit(self, request: Request) -> None:
        """Refuse a request before it is handled by raising `Reply` (here: every request is let in)."""

    # --- handlers (called under the lock) ---------------------------------------------------------
    def _unknown(self, request: Request, payload: Any, rest: str) -> Response:
        raise not_found()

    def _get_user(self, request: Request, payload: Any) -> Response:
        if "authorization" not in request.headers:
            raise error(401, "Requires authentication")
        return JSONResponse(user_json(base_url(request), self.reviewer_login))

    def _get_repo(self, request: Request, payload: Any, owner: str, repo: str) -> Response:
        if (owner, repo) not in self._repos:
            raise not_found()
        return JSONResponse(repo_json(base_url(request), owner, repo))

    def _get_pull(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        if "diff" in request.headers.get("accept", ""):
            return PlainTextResponse("".join(d.diff_text() for d in pr.current))
        return JSONResponse(pr.to_json(base_url(request)))

    def _get_files(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        base = base_url(request)
        files = [d.to_json(base, owner, repo, pr.head_sha) for d in pr.current[:MAX_LISTED_FILES]]
        return paginate(request, files)

    @staticmethod
    def _commit_json(base: str, pr: PullRequest, commit: dict[str, Any]) -> dict[str, Any]:
        return commit_json(base, pr.owner, pr.repo, commit["sha"], commit["message"], commit["author"],
                           commit["parent"], commit["date"])

    def _get_commits(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        base = base_url(request)
        return paginate(request, [self._commit_json(base, pr, c) for c in pr.commits[:MAX_LISTED_COMMITS]])

    def _get_commit(self, request: Request, payload: Any, owner: str, repo: str, sha: str) -> Response:
        state = self._repos.get((owner, repo))
        for pr in state.prs.values() if state else ():
            for commit in pr.commits:
                if commit["sha"] == sha:
                    base = base_url(request)
                    data = self._commit_json(base, pr, commit)
                    diffs = pr.diffs.get(sha, [])
                    data["files"] = [d.to_json(base, owner, repo, sha) for d in diffs]
                    additions = sum(d.additions for d in diffs)
                    deletions = sum(d.deletions for d in diffs)
                    data["stats"] = {"additions": additions, "deletions": deletions,
                                     "total": additions + deletions}
                    return JSONResponse(data)
        raise error(422, f"No commit found for SHA: {sha}")

    @staticmethod
    def _ancestors(state: RepoState, sha: str) -> list[str]:
        """`sha` and the commits before it, newest first (PR commits chain through `parent`)."""
        parents = {c["sha"]: c["parent"] for pr in state.prs.values() for c in pr.commits}
        chain = [sha]
        while chain[-1] in parents and parents[chain[-1]] and len(chain) <= len(parents):
            chain.append(parents[chain[-1]])
        return chain

    def _get_compare(self, request: Request, payload: Any, owner: str, repo: str, basehead: str) -> Response:
        """GitHub's three-dot compare of two commits: the files that differ (at most 300, on the
        first page only), the commits between them, and how they relate."""
        state = self._repos.get((owner, repo))
        base_ref, sep, head_ref = basehead.partition("...")
        if state is None or not sep:
            raise not_found()
        base_sha, head_sha = state.refs.get(base_ref, base_ref), state.refs.get(head_ref, head_ref)
        if base_sha not in state.snapshots or head_sha not in state.snapshots:
            raise not_found()
        head_chain, base_chain = self._ancestors(state, head_sha), self._ancestors(state, base_sha)
        merge_base = next((sha for sha in head_chain if sha in base_chain), base_sha)
        ahead_by = head_chain.index(merge_base) if merge_base in head_chain else 0
        behind_by = base_chain.index(merge_base) if merge_base in base_chain else 0
        status = ("identical" if base_sha == head_sha else "ahead" if behind_by == 0 and ahead_by
                  else "behind" if ahead_by == 0 else "diverged")
        old, new = state.snapshots[merge_base], state.snapshots[head_sha]
        files = [FakeFile(path, base=text_or_bytes(old.get(path)), head=text_or_bytes(new.get(path)))
                 for path in sorted(set(old) | set(new)) if old.get(path) != new.get(path)]
        base = base_url(request)
        diffs = [FileDiff.of(f) for f in files]
        commits = [c for pr in state.prs.values() for c in pr.commits if c["sha"] in head_chain[:ahead_by]]
        unique = list({c["sha"]: c for c in commits}.values())
        first_page = int_param(request, "page", 1) == 1
        return JSONResponse({
            "url": f"{base}/repos/{owner}/{repo}/compare/{basehead}", "status": status,
            "ahead_by": ahead_by, "behind_by": behind_by, "total_commits": len(unique),
            "merge_base_commit": {"sha": merge_base}, "base_commit": {"sha": base_sha},
            "commits": [commit_json(base, owner, repo, c["sha"], c["message"], c["author"], c["parent"],
                                    c["date"]) for c in unique],
            "files": [d.to_json(base, owner, repo, head_sha) for d in diffs][:MAX_COMPARE_FILES]
            if first_page else [],
        })

    def _get_contents(self, request: Request, payload: Any, owner: str, repo: str, path: str) -> Response:
        state = self._repos.get((owner, repo))
        if state is None:
            raise not_found()
        ref = request.query_params.get("ref") or "main"
        sha = state.refs.get(ref, ref)
        data = state.snapshots.get(sha, {}).get(path)
        if data is None:
            raise not_found()
        base = base_url(request)
        blob = git_blob_sha(data)
        too_big = len(data) > MAX_CONTENT_BYTES
        url = f"{base}/repos/{owner}/{repo}/contents/{path}?ref={ref}"
        web = f"{base}/{owner}/{repo}/blob/{sha}/{path}"
        git = f"{base}/repos/{owner}/{repo}/git/blobs/{blob}"
        return JSONResponse({
            "type": "file", "encoding": "none" if too_big else "base64", "size": len(data),
            "name": path.rsplit("/", 1)[-1], "path": path, "sha": blob,
            "content": "" if too_big else _wrap_base64(data),
            "url": url, "git_url": git, "html_url": web,
            "download_url": f"{base}/{owner}/{repo}/raw/{sha}/{path}",
            "_links": {"self": url, "git": git, "html": web},
        })

    def _get_raw(self, request: Request, payload: Any, owner: str, repo: str, sha: str,
                 path: str) -> Response:
        state = self._repos.get((owner, repo))
        data = state.snapshots.get(state.refs.get(sha, sha), {}).get(path) if state else None
        if data is None:
            raise not_found()
        return Response(data, media_type="application/octet-stream")

    def _get_pr_page(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        items = "".join(f"<li><code>{html.escape(d.file.filename)}</code> {d.file.status} "
                        f"+{d.additions} -{d.deletions}</li>" for d in pr.current)
        return HTMLResponse(f"<!doctype html><title>{html.escape(pr.title)} #{number}</title>"
                            f"<h1>{html.escape(pr.title)} <small>#{number}</small></h1>"
                            f"<pre>{html.escape(pr.body)}</pre><ul>{items}</ul>")

    def _get_reviews(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        return paginate(request, self._lookup(owner, repo, number)[1].reviews)

    @staticmethod
    def _find_review(pr: PullRequest, review_id: int) -> dict[str, Any]:
        for review in pr.reviews:
            if review["id"] == review_id:
                return review
        raise not_found()

    def _get_review(self, request: Request, payload: Any, owner: str, repo: str, number: int,
                    review_id: int) -> Response:
        return JSONResponse(self._find_review(self._lookup(owner, repo, number)[1], review_id))

    def _get_comments(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        return paginate(request, self._lookup(owner, repo, number)[1].comments)


def _wrap_base64(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return "".join(encoded[i:i + 60] + "\n" for i in range(0, len(encoded), 60))
