"""A local stand-in for GitHub's REST API: pull requests, their files and commits, reviews.

Used in-process by tests and `pr-review demo`, or standalone for benchmarks:
`python -m prreview.fakes.github --port 9999` (serves the demo PR, plus synthetic ones on request).
Its root URL is the `GITHUB_API_URL`; PR web URLs are `{root}/{owner}/{repo}/pull/{n}`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import html
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from prreview.fakes._github_model import (
    DOCS_URL,
    MAX_LISTED_COMMITS,
    MAX_LISTED_FILES,
    REVIEW_STATES,
    FakeFile,
    FileDiff,
    PullRequest,
    commit_json,
    diff_hunk,
    fake_sha,
    next_id,
    now_iso,
    repo_json,
    user_json,
)
from prreview.fakes._patch import PatchLine, find_line, git_blob_sha
from prreview.fakes._server import BackgroundServer, Startable, wait_for_signal

__all__ = ["FakeFile", "FakeGitHub", "RecordedRequest"]

AUTHENTICATED_LIMIT = 5000  # requests per hour, as GitHub grants a token
ANONYMOUS_LIMIT = 60
RATE_WINDOW_S = 3600
MAX_CONTENT_BYTES = 1_000_000  # the contents API sends no content above this
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@dataclass
class RecordedRequest:
    """One request the fake received; `status` is filled in once it is answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names, as sent (Authorization included)
    body: Any
    status: int | None = None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class _Fault:
    kind: Literal["primary", "secondary", "error"]
    remaining: int
    status: int
    reset_in_s: float
    match: str | None
    method: str | None = None


@dataclass
class _Budget:
    limit: int
    reset_at: int
    used: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass
class _Repo:
    prs: dict[int, PullRequest] = field(default_factory=dict)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> path -> bytes
    refs: dict[str, str] = field(default_factory=dict)  # branch -> sha


class _PRNotFound(KeyError):
    """No such repository or pull request (answered 404)."""


class _Reply(Exception):
    """Raised by a handler to answer with an error right away."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _error(status: int, message: str, errors: list[Any] | None = None) -> _Reply:
    body: dict[str, Any] = {"message": message, "documentation_url": DOCS_URL, "status": str(status)}
    if errors is not None:
        body["errors"] = errors
    return _Reply(JSONResponse(body, status_code=status))


def _not_found() -> _Reply:
    return _error(404, "Not Found")


def _unprocessable(*errors: str) -> _Reply:
    return _error(422, "Unprocessable Entity", list(errors))


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        return default


def _paginate(request: Request, items: Sequence[Any]) -> JSONResponse:
    """One page of `items` with GitHub's `Link` header (per_page default 30, at most 100)."""
    per_page = min(100, max(1, _int_param(request, "per_page", 30)))
    page = max(1, _int_param(request, "page", 1))
    last = max(1, math.ceil(len(items) / per_page))
    chunk = list(items[(page - 1) * per_page: page * per_page])

    def link(target: int, rel: str) -> str:
        url = request.url.include_query_params(per_page=per_page, page=target)
        return f'<{url}>; rel="{rel}"'

    links = []
    if page > 1:
        links.append(link(min(page - 1, last), "prev"))
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        links.append(link(1, "first"))
    headers = {"link": ", ".join(links)} if links else {}
    return JSONResponse(chunk, headers=headers)


def _wrap_base64(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return "".join(encoded[i:i + 60] + "\n" for i in range(0, len(encoded), 60))


class FakeGitHub(Startable):
    """GitHub's REST shapes on 127.0.0.1, with fault injection and a record of every request.

    `token`: when set, a request carrying another token gets 401 and writes need it; when None
    any caller is accepted. Each caller (Authorization value, or anonymous) has an hourly budget
    of requests like GitHub's (`rate_limit`, `anonymous_rate_limit`), reported in the
    `x-ratelimit-*` headers. With `enforce_rate_limit` a spent budget answers 403 until its reset,
    as GitHub does; without it (the default, so long benchmarks and demos never stall for an
    hour) a spent budget starts a new window at once. Use `rate_limit_next` for scripted limits.
    Thread-safe: tests call it while the server thread answers.
    """

    def __init__(self, *, token: str | None = None, latency_s: float = 0.0, host: str = "127.0.0.1",
                 port: int = 0, reviewer_login: str = "pr-review-bot", rate_limit: int = AUTHENTICATED_LIMIT,
                 anonymous_rate_limit: int = ANONYMOUS_LIMIT, enforce_rate_limit: bool = False) -> None:
        self.token = token
        self.latency_s = latency_s
        self.rate_limit = rate_limit
        self.anonymous_rate_limit = anonymous_rate_limit
        self.enforce_rate_limit = enforce_rate_limit
        self.reviewer_login = reviewer_login
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._faults: list[_Fault] = []
        self._budgets: dict[str, _Budget] = {}
        self._requests: list[RecordedRequest] = []
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
            state = self._repos.setdefault((owner, repo), _Repo())
            base_sha = base_sha or fake_sha(owner, repo, number, "base", time.time_ns())
            pr = PullRequest(owner=owner, repo=repo, number=number, title=title, body=body, author=author,
                             head_ref=head_ref or f"feature/pr-{number}", base_ref=base_ref,
                             base_sha=base_sha, head_sha=base_sha, files={}, draft=draft)
            state.prs[number] = pr
            # The base starts as the branch's current tree, so files stored with put_file stay.
            branch_tree = state.snapshots.get(state.refs.get(base_ref, ""), {})
            state.refs[base_ref] = base_sha
            state.snapshots.setdefault(base_sha, dict(branch_tree))
            messages = list(commits) if commits else [f"Update {len(files)} file(s)"]
            return self._apply_push(state, pr, files, (), messages, head_sha)

    def push(self, owner: str, repo: str, number: int, files: Sequence[FakeFile] = (), *,
             remove: Sequence[str] = (), messages: Sequence[str] = ("Address review comments",),
             head_sha: str | None = None) -> str:
        """Simulate a push to the PR's branch: `files` replace or join the PR's changed files
        (by filename), `remove` drops some; new commits are appended. Returns the new head sha."""
        with self._lock:
            state, pr = self._lookup(owner, repo, number)
            return self._apply_push(state, pr, files, remove, list(messages), head_sha)

    def _apply_push(self, state: _Repo, pr: PullRequest, files: Sequence[FakeFile], remove: Sequence[str],
                    messages: list[str], head_sha: str | None) -> str:
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
                base_snapshot.setdefault(file.base_path, _bytes(file.base))
            if file.status in ("renamed", "removed"):
                head_snapshot.pop(file.base_path, None)
            if file.head is not None:
                head_snapshot[file.filename] = _bytes(file.head)
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

    def make_synthetic_pr(self, owner: str, repo: str, number: int, file_count: int = 300, *,
                          lines_per_file: int = 40, defect_every: int = 10, commits: int = 3) -> str:
        """A large PR for load tests: mostly modified Python files (a few lines changed each),
        some added, removed and renamed ones, a binary every 100 files, and a planted SQL
        injection every `defect_every` files. Deterministic. Returns the head sha."""
        files = [_synthetic_file(i, lines_per_file, defect_every) for i in range(file_count)]
        return self.add_pr(owner, repo, number, files, title=f"Refactor {file_count} modules",
                           body="Mechanical refactor generated for load tests.",
                           commits=[f"Refactor batch {i + 1}" for i in range(max(1, commits))])

    def head_sha(self, owner: str, repo: str, number: int) -> str:
        with self._lock:
            return self._lookup(owner, repo, number)[1].head_sha

    # --- faults ---------------------------------------------------------------------------------
    def rate_limit_next(self, n: int = 1, kind: Literal["primary", "secondary"] = "primary",
                        reset_in_s: float = 2.0, match: str | None = None) -> None:
        """The next `n` API requests (whose path contains `match`, if given) are rate limited:
        primary -> 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`; secondary -> 429
        with `retry-after`."""
        with self._lock:
            self._faults.append(_Fault(kind, n, 403 if kind == "primary" else 429, reset_in_s, match))

    def fail_next(self, n: int = 1, status: int = 502, match: str | None = None,
                  method: str | None = None) -> None:
        """The next `n` API requests (whose path contains `match` and whose method is `method`,
        if given) answer `status`; a 422 answers as GitHub rejects a review comment."""
        with self._lock:
            self._faults.append(_Fault("error", n, status, 0.0, match, method))

    def put_file(self, owner: str, repo: str, path: str, content: str | bytes, *, ref: str) -> None:
        """Store a file outside any PR's diff (say, a repository config) at `ref` (a branch or sha)."""
        with self._lock:
            state = self._repos.setdefault((owner, repo), _Repo())
            if ref not in state.refs and ref not in state.snapshots:
                state.refs[ref] = fake_sha(owner, repo, "branch", ref)  # a branch with no PR yet
            state.snapshots.setdefault(state.refs.get(ref, ref), {})[path] = _bytes(content)

    # --- records --------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def posted_reviews(self, owner: str, repo: str, number: int) -> list[dict[str, Any]]:
        """Reviews posted to the PR, as GitHub returns them, each with its `comments` added."""
        with self._lock:
            pr = self._lookup(owner, repo, number)[1]
            out = []
            for review in pr.reviews:
                item = copy.deepcopy(review)
                item["comments"] = [copy.deepcopy(c) for c in pr.comments
                                    if c["pull_request_review_id"] == review["id"]]
                out.append(item)
            return out

    def posted_comments(self, owner: str, repo: str, number: int) -> list[dict[str, Any]]:
        """Every review comment on the PR (from reviews and single comments), oldest first."""
        with self._lock:
            return copy.deepcopy(self._lookup(owner, repo, number)[1].comments)

    # --- HTTP -----------------------------------------------------------------------------------
    def _lookup(self, owner: str, repo: str, number: int | None = None) -> tuple[_Repo, PullRequest]:
        state = self._repos.get((owner, repo))
        if state is None or number not in state.prs:
            raise _PRNotFound(f"no PR {owner}/{repo}#{number}")
        return state, state.prs[number]

    def _build_app(self) -> Starlette:
        def route(path: str, handler: Callable[..., Response], methods: list[str]) -> Route:
            return Route(path, self._endpoint(handler), methods=methods)

        pulls = "/repos/{owner}/{repo}/pulls/{number:int}"
        return Starlette(routes=[
            route("/rate_limit", self._get_rate_limit, ["GET"]),
            route("/user", self._get_user, ["GET"]),
            route("/repos/{owner}/{repo}", self._get_repo, ["GET"]),
            route(pulls, self._get_pull, ["GET"]),
            route(pulls + "/files", self._get_files, ["GET"]),
            route(pulls + "/commits", self._get_commits, ["GET"]),
            route(pulls + "/reviews", self._get_reviews, ["GET"]),
            route(pulls + "/reviews", self._post_review, ["POST"]),
            route(pulls + "/reviews/{review_id:int}", self._get_review, ["GET"]),
            route(pulls + "/reviews/{review_id:int}", self._put_review, ["PUT"]),
            route(pulls + "/comments", self._get_comments, ["GET"]),
            route(pulls + "/comments", self._post_comment, ["POST"]),
            route("/repos/{owner}/{repo}/commits/{sha}", self._get_commit, ["GET"]),
            route("/repos/{owner}/{repo}/compare/{basehead}", self._get_compare, ["GET"]),
            route("/repos/{owner}/{repo}/contents/{path:path}", self._get_contents, ["GET"]),
            route("/{owner}/{repo}/pull/{number:int}", self._get_pr_page, ["GET"]),
            route("/{owner}/{repo}/raw/{sha}/{path:path}", self._get_raw, ["GET"]),
            route("/{rest:path}", self._unknown, _ALL_METHODS),
        ])

    def _endpoint(self, handler: Callable[..., Response]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                payload: Any = json.loads(raw) if raw else None
            except ValueError:
                payload = raw.decode(errors="replace")
            record = RecordedRequest(request.method, request.url.path, dict(request.query_params),
                                     dict(request.headers), payload)
            with self._lock:
                self._requests.append(record)
            if self.latency_s > 0:
                await asyncio.sleep(self.latency_s)
            # Web pages and /rate_limit neither count against the budget nor take injected faults.
            counted = request.url.path.startswith(("/repos/", "/user"))
            try:
                with self._lock:
                    self._admit(request, counted)
                    response = handler(request, payload, **request.path_params)
            except _Reply as reply:
                response = reply.response
            except _PRNotFound:
                response = _not_found().response
            for name, value in self._budget_headers(request).items():
                response.headers.setdefault(name, value)
            response.headers.setdefault("x-github-api-version-selected", "2022-11-28")
            record.status = response.status_code
            return response

        return endpoint

    def _identity(self, request: Request) -> str:
        return request.headers.get("authorization") or "anonymous"

    def _budget(self, request: Request) -> _Budget:
        identity = self._identity(request)
        budget = self._budgets.get(identity)
        now = int(time.time())
        if budget is None or budget.reset_at <= now:
            limit = self.anonymous_rate_limit if identity == "anonymous" else self.rate_limit
            budget = self._budgets[identity] = _Budget(limit, now + RATE_WINDOW_S)
        return budget

    def _budget_headers(self, request: Request) -> dict[str, str]:
        with self._lock:
            budget = self._budget(request)
            return {"x-ratelimit-limit": str(budget.limit), "x-ratelimit-remaining": str(budget.remaining),
                    "x-ratelimit-reset": str(budget.reset_at), "x-ratelimit-used": str(budget.used),
                    "x-ratelimit-resource": "core"}

    def _admit(self, request: Request, counted: bool) -> None:
        """Authentication, injected faults, then the hourly budget, in GitHub's order."""
        auth = request.headers.get("authorization")
        if self.token is not None:
            if auth is not None and auth not in (f"token {self.token}", f"Bearer {self.token}"):
                raise _error(401, "Bad credentials")
            if auth is None and request.method != "GET":
                raise _error(401, "Requires authentication")
        budget = self._budget(request)
        if not counted:
            return
        fault = next((f for f in self._faults if (f.match is None or f.match in request.url.path)
                      and (f.method is None or f.method == request.method)), None)
        if fault is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            raise self._fault_reply(fault, budget)
        if budget.remaining <= 0:
            if self.enforce_rate_limit:
                wait_s = budget.reset_at - time.time()
                raise self._fault_reply(_Fault("primary", 1, 403, wait_s, None), budget)
            budget = _Budget(budget.limit, int(time.time()) + RATE_WINDOW_S)
            self._budgets[self._identity(request)] = budget
        budget.used += 1

    @staticmethod
    def _fault_reply(fault: _Fault, budget: _Budget) -> _Reply:
        if fault.kind == "error" and fault.status == 422:
            return _unprocessable("Pull request review thread line must be part of the diff")
        if fault.kind == "error":
            return _error(fault.status, "Server Error")
        wait_s = max(1, math.ceil(fault.reset_in_s))
        if fault.kind == "secondary":
            reply = _error(429, "You have exceeded a secondary rate limit. Please wait a few minutes "
                                "before you try again.")
            reply.response.headers["retry-after"] = str(wait_s)
            return reply
        reply = _error(403, "API rate limit exceeded for user. (But here's the good news: "
                            "Authenticated requests get a higher rate limit.)")
        reply.response.headers.update({
            "x-ratelimit-limit": str(budget.limit), "x-ratelimit-remaining": "0",
            "x-ratelimit-used": str(budget.limit),
            "x-ratelimit-reset": str(math.ceil(time.time() + fault.reset_in_s)),
            "x-ratelimit-resource": "core"})
        return reply

    @staticmethod
    def _base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # --- handlers (called under the lock) ---------------------------------------------------------
    def _unknown(self, request: Request, payload: Any, rest: str) -> Response:
        raise _not_found()

    def _get_rate_limit(self, request: Request, payload: Any) -> Response:
        budget = self._budget(request)
        core = {"limit": budget.limit, "used": budget.used, "remaining": budget.remaining,
                "reset": budget.reset_at}
        search = {"limit": 30, "used": 0, "remaining": 30, "reset": int(time.time()) + 60}
        return JSONResponse({"resources": {"core": core, "search": search, "graphql": core}, "rate": core})

    def _get_user(self, request: Request, payload: Any) -> Response:
        if "authorization" not in request.headers:
            raise _error(401, "Requires authentication")
        return JSONResponse(user_json(self._base(request), self.reviewer_login))

    def _get_repo(self, request: Request, payload: Any, owner: str, repo: str) -> Response:
        if (owner, repo) not in self._repos:
            raise _not_found()
        return JSONResponse(repo_json(self._base(request), owner, repo))

    def _get_pull(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        if "diff" in request.headers.get("accept", ""):
            return PlainTextResponse("".join(d.diff_text() for d in pr.current))
        return JSONResponse(pr.to_json(self._base(request)))

    def _get_files(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        base = self._base(request)
        files = [d.to_json(base, owner, repo, pr.head_sha) for d in pr.current[:MAX_LISTED_FILES]]
        return _paginate(request, files)

    def _commit_json(self, base: str, pr: PullRequest, commit: dict[str, Any]) -> dict[str, Any]:
        return commit_json(base, pr.owner, pr.repo, commit["sha"], commit["message"], commit["author"],
                           commit["parent"], commit["date"])

    def _get_commits(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        base = self._base(request)
        return _paginate(request, [self._commit_json(base, pr, c) for c in pr.commits[:MAX_LISTED_COMMITS]])

    def _get_commit(self, request: Request, payload: Any, owner: str, repo: str, sha: str) -> Response:
        state = self._repos.get((owner, repo))
        for pr in state.prs.values() if state else ():
            for commit in pr.commits:
                if commit["sha"] == sha:
                    base = self._base(request)
                    data = self._commit_json(base, pr, commit)
                    diffs = pr.diffs.get(sha, [])
                    data["files"] = [d.to_json(base, owner, repo, sha) for d in diffs]
                    additions = sum(d.additions for d in diffs)
                    deletions = sum(d.deletions for d in diffs)
                    data["stats"] = {"additions": additions, "deletions": deletions,
                                     "total": additions + deletions}
                    return JSONResponse(data)
        raise _error(422, f"No commit found for SHA: {sha}")

    def _ancestors(self, state: _Repo, sha: str) -> list[str]:
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
            raise _not_found()
        base_sha, head_sha = state.refs.get(base_ref, base_ref), state.refs.get(head_ref, head_ref)
        if base_sha not in state.snapshots or head_sha not in state.snapshots:
            raise _not_found()
        head_chain, base_chain = self._ancestors(state, head_sha), self._ancestors(state, base_sha)
        merge_base = next((sha for sha in head_chain if sha in base_chain), base_sha)
        ahead_by = head_chain.index(merge_base) if merge_base in head_chain else 0
        behind_by = base_chain.index(merge_base) if merge_base in base_chain else 0
        status = ("identical" if base_sha == head_sha else "ahead" if behind_by == 0 and ahead_by
                  else "behind" if ahead_by == 0 else "diverged")
        old, new = state.snapshots[merge_base], state.snapshots[head_sha]
        files = [FakeFile(path, base=_text_or_bytes(old.get(path)), head=_text_or_bytes(new.get(path)))
                 for path in sorted(set(old) | set(new)) if old.get(path) != new.get(path)]
        base = self._base(request)
        diffs = [FileDiff.of(f) for f in files]
        commits = [c for pr in state.prs.values() for c in pr.commits if c["sha"] in head_chain[:ahead_by]]
        unique = list({c["sha"]: c for c in commits}.values())
        first_page = _int_param(request, "page", 1) == 1
        return JSONResponse({
            "url": f"{base}/repos/{owner}/{repo}/compare/{basehead}", "status": status,
            "ahead_by": ahead_by, "behind_by": behind_by, "total_commits": len(unique),
            "merge_base_commit": {"sha": merge_base}, "base_commit": {"sha": base_sha},
            "commits": [commit_json(base, owner, repo, c["sha"], c["message"], c["author"], c["parent"],
                                    c["date"]) for c in unique],
            "files": [d.to_json(base, owner, repo, head_sha) for d in diffs][:300] if first_page else [],
        })

    def _get_contents(self, request: Request, payload: Any, owner: str, repo: str, path: str) -> Response:
        state = self._repos.get((owner, repo))
        if state is None:
            raise _not_found()
        ref = request.query_params.get("ref") or "main"
        sha = state.refs.get(ref, ref)
        data = state.snapshots.get(sha, {}).get(path)
        if data is None:
            raise _not_found()
        base = self._base(request)
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
            raise _not_found()
        return Response(data, media_type="application/octet-stream")

    def _get_pr_page(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        items = "".join(f"<li><code>{html.escape(d.file.filename)}</code> {d.file.status} "
                        f"+{d.additions} -{d.deletions}</li>" for d in pr.current)
        return HTMLResponse(f"<!doctype html><title>{html.escape(pr.title)} #{number}</title>"
                            f"<h1>{html.escape(pr.title)} <small>#{number}</small></h1>"
                            f"<pre>{html.escape(pr.body)}</pre><ul>{items}</ul>")

    # --- reviews and comments ---------------------------------------------------------------------
    def _get_reviews(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        return _paginate(request, self._lookup(owner, repo, number)[1].reviews)

    def _find_review(self, pr: PullRequest, review_id: int) -> dict[str, Any]:
        for review in pr.reviews:
            if review["id"] == review_id:
                return review
        raise _not_found()

    def _get_review(self, request: Request, payload: Any, owner: str, repo: str, number: int,
                    review_id: int) -> Response:
        return JSONResponse(self._find_review(self._lookup(owner, repo, number)[1], review_id))

    def _put_review(self, request: Request, payload: Any, owner: str, repo: str, number: int,
                    review_id: int) -> Response:
        review = self._find_review(self._lookup(owner, repo, number)[1], review_id)
        if not isinstance(payload, dict) or not isinstance(payload.get("body"), str):
            raise _unprocessable("body is required")
        review["body"] = payload["body"]
        return JSONResponse(review)

    def _get_comments(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        return _paginate(request, self._lookup(owner, repo, number)[1].comments)

    def _diff_at(self, pr: PullRequest, commit_id: Any) -> list[FileDiff]:
        """The PR's diff as of `commit_id` (the head of the push that contained it)."""
        if commit_id is None or commit_id == pr.head_sha:
            return pr.current
        shas = [c["sha"] for c in pr.commits]
        if not isinstance(commit_id, str) or commit_id not in shas:
            raise _unprocessable(f"No commit found for SHA: {commit_id}")
        for sha in shas[shas.index(commit_id):]:
            if sha in pr.diffs:
                return pr.diffs[sha]
        return pr.current

    def _anchor(self, diffs: list[FileDiff], comment: Any) -> tuple[FileDiff, PatchLine, PatchLine | None]:
        """Where GitHub would place an inline comment, or the 422 it answers when it cannot."""
        if not isinstance(comment, dict) or not isinstance(comment.get("body"), str):
            raise _unprocessable("comment body is required")
        path = comment.get("path")
        diff = next((d for d in diffs if d.file.filename == path), None)
        if diff is None:
            raise _unprocessable("Path could not be resolved")
        side = comment.get("side") or "RIGHT"
        if side not in ("LEFT", "RIGHT"):
            raise _unprocessable(f"side must be LEFT or RIGHT, not {side!r}")
        end: PatchLine | None
        if isinstance(comment.get("position"), int) and comment.get("line") is None:
            end = next((ln for ln in diff.lines if ln.position == comment["position"]), None)
        elif isinstance(comment.get("line"), int):
            end = find_line(list(diff.lines), comment["line"], side)
        else:
            raise _unprocessable("line or position is required")
        if end is None:
            raise _unprocessable("Line could not be resolved")
        start: PatchLine | None = None
        if comment.get("start_line") is not None:
            start_side = comment.get("start_side") or side
            start = find_line(list(diff.lines), comment["start_line"], start_side) \
                if isinstance(comment["start_line"], int) else None
            if start is None:
                raise _unprocessable("Start line could not be resolved")
            if start.hunk != end.hunk:
                raise _unprocessable("pull_request_review_thread.start_line must be part of the same hunk "
                                     "as the line.")
            if start.position >= end.position:
                raise _unprocessable("pull_request_review_thread.start_line must precede the end line.")
        return diff, end, start

    def _comment_json(self, base: str, pr: PullRequest, anchor: tuple[FileDiff, PatchLine, PatchLine | None],
                      comment: dict[str, Any], commit_id: str, review_id: int) -> dict[str, Any]:
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
            "user": user_json(base, self.reviewer_login), "body": comment["body"],
            "created_at": created, "updated_at": created,
            "html_url": f"{pr.html_url(base)}#discussion_r{cid}", "pull_request_url": pr.api_url(base),
            "author_association": "COLLABORATOR", "start_line": start_line, "original_start_line": start_line,
            "start_side": start_side, "line": line, "original_line": line, "side": side,
            "subject_type": "line",
        }
        if comment.get("in_reply_to") is not None:
            data["in_reply_to_id"] = comment["in_reply_to"]
        return data

    def _post_review(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        if not isinstance(payload, dict):
            raise _error(400, "Problems parsing JSON")
        event = payload.get("event")
        if event not in REVIEW_STATES:
            raise _unprocessable(f"Variable $event of type PullRequestReviewEvent was provided invalid "
                                 f"value: {event!r}")
        body = payload.get("body") or ""
        comments = payload.get("comments") or []
        if not isinstance(comments, list):
            raise _unprocessable("comments must be an array")
        if event == "REQUEST_CHANGES" and not body:
            raise _unprocessable("Review body is required to request changes")
        commit_id = payload.get("commit_id") or pr.head_sha
        diffs = self._diff_at(pr, commit_id)
        anchors = [self._anchor(diffs, c) for c in comments]  # all or nothing, as GitHub
        base = self._base(request)
        rid = next_id()
        review = {
            "id": rid, "node_id": f"PRR_{rid}", "user": user_json(base, self.reviewer_login), "body": body,
            "state": REVIEW_STATES[event], "html_url": f"{pr.html_url(base)}#pullrequestreview-{rid}",
            "pull_request_url": pr.api_url(base), "author_association": "COLLABORATOR",
            "submitted_at": now_iso() if event else None, "commit_id": commit_id,
            "_links": {"html": {"href": f"{pr.html_url(base)}#pullrequestreview-{rid}"},
                       "pull_request": {"href": pr.api_url(base)}},
        }
        pr.reviews.append(review)
        pr.comments += [self._comment_json(base, pr, a, c, commit_id, rid) for a, c in zip(anchors, comments,
                                                                                          strict=True)]
        return JSONResponse(review)

    def _post_comment(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        if not isinstance(payload, dict):
            raise _error(400, "Problems parsing JSON")
        base = self._base(request)
        reply_to = payload.get("in_reply_to")
        if reply_to is not None:
            parent = next((c for c in pr.comments if c["id"] == reply_to), None)
            if parent is None:
                raise _not_found()
            payload = {**payload, "path": parent["path"], "line": parent["line"], "side": parent["side"],
                       "commit_id": parent["commit_id"]}
        if not payload.get("commit_id"):
            raise _unprocessable("commit_id is required")
        commit_id = payload["commit_id"]
        anchor = self._anchor(self._diff_at(pr, commit_id), payload)
        comment = self._comment_json(base, pr, anchor, payload, commit_id, next_id())
        pr.comments.append(comment)
        return JSONResponse(comment, status_code=201)


def _bytes(content: str | bytes) -> bytes:
    return content if isinstance(content, bytes) else content.encode()


def _text_or_bytes(data: bytes | None) -> str | bytes | None:
    """Text files as str, binary ones as bytes (which FakeFile treats as binary: no patch)."""
    if data is None or b"\0" in data:
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


def _synthetic_file(index: int, lines_per_file: int, defect_every: int) -> FakeFile:
    name = f"src/pkg_{index // 50:02d}/module_{index:04d}.py"
    base_lines = [f"def function_{index}_{j}(value):\n    return value + {j}\n"
                  for j in range(lines_per_file // 2)]
    base = "".join(base_lines)
    head_lines = list(base_lines)
    for j in range(1, len(head_lines), 7):
        head_lines[j] = f"def function_{index}_{j}(value, scale=1):\n    return (value + {j}) * scale\n"
    if defect_every and index % defect_every == 0:
        head_lines.append(f"def lookup_{index}(cursor, user_id):\n"
                          f"    return cursor.execute(f\"SELECT * FROM t{index} WHERE id = {{user_id}}\")\n")
    head = "".join(head_lines)
    if index % 100 == 99:
        return FakeFile(f"assets/image_{index:04d}.png", head=b"\x89PNG\r\n\x1a\n" + bytes(range(64)) * 4)
    if index % 50 == 49:
        return FakeFile(name, base=base, head=base, previous_filename=name.replace("module_", "old_module_"))
    if index % 25 == 24:
        return FakeFile(name, base=base)
    if index % 10 == 9:
        return FakeFile(name, head=head)
    return FakeFile(name, base=base, head=head)


def main(argv: Sequence[str] | None = None) -> None:
    from prreview.fakes.sample_pr import install_sample_pr

    parser = argparse.ArgumentParser(prog="python -m prreview.fakes.github", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--latency-s", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--token", default=None, help="the only token accepted (default: any)")
    parser.add_argument("--anonymous-rate-limit", type=int, default=ANONYMOUS_LIMIT,
                        help="requests per hour without a token (GitHub: 60)")
    parser.add_argument("--enforce-rate-limit", action="store_true",
                        help="answer 403 once a caller's hourly budget is spent, as GitHub does")
    parser.add_argument("--synthetic-prs", type=int, default=0,
                        help="also serve acme/bench PRs 1..N (synthetic, see --synthetic-files)")
    parser.add_argument("--synthetic-files", type=int, default=20, help="files per synthetic PR")
    args = parser.parse_args(argv)
    gh = FakeGitHub(token=args.token, latency_s=args.latency_s, host=args.host, port=args.port,
                    anonymous_rate_limit=args.anonymous_rate_limit,
                    enforce_rate_limit=args.enforce_rate_limit)
    gh.start()
    try:
        sample = install_sample_pr(gh)
        for number in range(1, args.synthetic_prs + 1):
            gh.make_synthetic_pr("acme", "bench", number, file_count=args.synthetic_files)
        print(f"fake GitHub at {gh.url} (GITHUB_API_URL={gh.url})", flush=True)
        print(f"demo PR: {sample}", flush=True)
        if args.synthetic_prs:
            print(f"synthetic PRs: {gh.pr_url('acme', 'bench', 1)} .. "
                  f"{gh.pr_url('acme', 'bench', args.synthetic_prs)}", flush=True)
        wait_for_signal(gh.server)
    finally:
        gh.stop()


if __name__ == "__main__":
    main()
