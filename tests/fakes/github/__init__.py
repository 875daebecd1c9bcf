"""The test suite's GitHub: the demo's read-only GitHub plus writes, faults, rate limits and records.

`FakeGitHub` extends `prreview.demo.DemoGitHub` with what tests script and check: posting reviews
and comments (`posted_reviews`, `posted_comments`), pushes and stray files (`push`, `put_file`),
synthetic PRs, one accepted token, per-caller rate limits, injected failures (`fail_next`,
`rate_limit_next`), a latency, and a record of every request (`requests`). As GitHub's side of a
GitHub App: `install_app` (JWT-checked App endpoints, installation tokens), and signed webhook
deliveries (`deliver`) of payloads built from the stored PRs (`pull_request_event`,
`issue_comment_event`, `ping_event`).

Standalone for benchmarks: `python -m tests.fakes.github --port 9999` (serves the demo PR, plus
synthetic ones on request). Each concern has its module: `_auth` (tokens), `_faults` (failures and
rate limits), `_records` (the request log), `_reviews` (the write endpoints), `_synthetic`,
`_app` (a GitHub App: its JWT, installations, installation tokens), `_webhooks` (event payloads
and signed deliveries), `_accounts` (users and bots).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from prreview.demo import DemoGitHub, FakeFile
from prreview.demo._github_http import base_url, error, not_found, paginate
from prreview.demo._github_model import PullRequest, RepoState, fake_sha, to_bytes
from prreview.demo.github import PULL, Handler
from tests.fakes.github import _reviews, _webhooks
from tests.fakes.github._app import TOKEN_TTL_S, FakeApp, IssuedToken
from tests.fakes.github._auth import check_token
from tests.fakes.github._faults import ANONYMOUS_LIMIT, AUTHENTICATED_LIMIT, Faults, WriteFaults
from tests.fakes.github._records import RecordedRequest
from tests.fakes.github._synthetic import synthetic_files

__all__ = ["Delivery", "FakeFile", "FakeGitHub", "IssuedToken", "RecordedRequest", "signature_256"]

Delivery = _webhooks.Delivery
signature_256 = _webhooks.signature_256

ISSUE = "/repos/{owner}/{repo}/issues/{number:int}"
ISSUE_COMMENT = "/repos/{owner}/{repo}/issues/comments/{comment_id:int}"
# Web pages and /rate_limit neither count against the budget nor take injected faults.
_COUNTED_PREFIXES = ("/repos/", "/user")


class FakeGitHub(DemoGitHub):
    """GitHub's REST shapes on 127.0.0.1, with fault injection and a record of every request.

    `token`: when set, a request carrying another token gets 401 and writes need it; when None
    any caller is accepted. Each caller has an hourly budget of requests (`rate_limit`,
    `anonymous_rate_limit`; see `Faults`). Use `rate_limit_next` for scripted limits.
    Thread-safe: tests call it while the server thread answers.
    """

    def __init__(self, *, token: str | None = None, latency_s: float = 0.0, host: str = "127.0.0.1",
                 port: int = 0, reviewer_login: str = "pr-review-bot", rate_limit: int = AUTHENTICATED_LIMIT,
                 anonymous_rate_limit: int = ANONYMOUS_LIMIT, enforce_rate_limit: bool = False) -> None:
        self.token = token
        self.latency_s = latency_s
        self.faults = Faults(rate_limit=rate_limit, anonymous_rate_limit=anonymous_rate_limit,
                             enforce_rate_limit=enforce_rate_limit)
        self._requests: list[RecordedRequest] = []
        self.write_faults = WriteFaults()
        self._issue_comments: dict[tuple[str, str, int], list[dict[str, Any]]] = {}  # conversation comments
        self._app: FakeApp | None = None
        self._deliveries: list[_webhooks.Delivery] = []
        self.hook_id = 400_000_001  # the webhook GitHub delivers from
        super().__init__(host=host, port=port, reviewer_login=reviewer_login)

    # --- content --------------------------------------------------------------------------------
    def push(self, owner: str, repo: str, number: int, files: Sequence[FakeFile] = (), *,
             remove: Sequence[str] = (), messages: Sequence[str] = ("Address review comments",),
             head_sha: str | None = None) -> str:
        """Simulate a push to the PR's branch: `files` replace or join the PR's changed files
        (by filename), `remove` drops some; new commits are appended. Returns the new head sha."""
        with self._lock:
            state, pr = self._lookup(owner, repo, number)
            return self._apply_push(state, pr, files, remove, list(messages), head_sha)

    def put_file(self, owner: str, repo: str, path: str, content: str | bytes, *, ref: str) -> None:
        """Store a file outside any PR's diff (say, a repository config) at `ref` (a branch or sha)."""
        with self._lock:
            state = self._repos.setdefault((owner, repo), RepoState())
            if ref not in state.refs and ref not in state.snapshots:
                state.refs[ref] = fake_sha(owner, repo, "branch", ref)  # a branch with no PR yet
            state.snapshots.setdefault(state.refs.get(ref, ref), {})[path] = to_bytes(content)

    def make_synthetic_pr(self, owner: str, repo: str, number: int, file_count: int = 300, *,
                          lines_per_file: int = 40, defect_every: int = 10, commits: int = 3) -> str:
        """A large PR for load tests (see `synthetic_files`). Deterministic. Returns the head sha."""
        files = synthetic_files(file_count, lines_per_file=lines_per_file, defect_every=defect_every)
        return self.add_pr(owner, repo, number, files, title=f"Refactor {file_count} modules",
                           body="Mechanical refactor generated for load tests.",
                           commits=[f"Refactor batch {i + 1}" for i in range(max(1, commits))])

    # --- faults ---------------------------------------------------------------------------------
    def rate_limit_next(self, n: int = 1, kind: Literal["primary", "secondary"] = "primary",
                        reset_in_s: float = 2.0, match: str | None = None) -> None:
        """The next `n` API requests (whose path contains `match`, if given) are rate limited:
        primary -> 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`; secondary -> 429
        with `retry-after`."""
        with self._lock:
            self.faults.rate_limit_next(n, kind, reset_in_s, match)

    def fail_next(self, n: int = 1, status: int = 502, match: str | None = None,
                  method: str | None = None) -> None:
        """The next `n` API requests (whose path contains `match` and whose method is `method`,
        if given) answer `status`; a 422 answers as GitHub rejects a review comment."""
        with self._lock:
            self.faults.fail_next(n, status, match, method)

    def fail_after_write_next(self, n: int = 1, status: int = 502, match: str | None = None,
                              method: str | None = None) -> None:
        """The next `n` successful writes (path contains `match`, method is `method`, if given) are
        done, then answered with `status` instead, as GitHub sometimes does: a client that retries
        blindly writes twice."""
        with self._lock:
            self.write_faults.fail_after_write_next(n, status, match, method)

    def add_issue_comment(self, owner: str, repo: str, number: int, body: str, *, login: str) -> dict[str, Any]:
        """A conversation comment on the PR written by `login` (someone else than the reviewer, say)."""
        with self._lock:
            pr = self._lookup(owner, repo, number)[1]
            comment = _reviews.issue_comment_json(pr, self.url, login, body)
            self._issue_comments.setdefault((owner, repo, number), []).append(comment)
            return copy.deepcopy(comment)

    def issue_comments(self, owner: str, repo: str, number: int) -> list[dict[str, Any]]:
        """The PR's conversation comments, oldest first."""
        with self._lock:
            self._lookup(owner, repo, number)
            return copy.deepcopy(self._issue_comments.get((owner, repo, number), []))

    # --- a GitHub App ---------------------------------------------------------------------------
    def install_app(self, app_id: int, public_key_pem: str | bytes, *, slug: str = "pr-review",
                    installations: Mapping[int, Iterable[tuple[str, str]]] | None = None,
                    token_ttl_s: float = TOKEN_TTL_S) -> None:
        """Register a GitHub App (its public key checks its JWTs) installed as `installations`
        {installation id: [(owner, repo), ...]} (default {12345: [("acme", "shop")]}). Its
        installation tokens live `token_ttl_s` (`app.token_ttl_s` may be changed later), reach only
        their installation's repositories, and what they post is authored by `<slug>[bot]`."""
        with self._lock:
            installed = installations if installations is not None else {12345: [("acme", "shop")]}
            self._app = FakeApp(app_id, public_key_pem, slug=slug, installations=installed, token_ttl_s=token_ttl_s)

    @property
    def app(self) -> FakeApp | None:
        return self._app

    def issued_app_tokens(self, installation_id: int | None = None) -> list[IssuedToken]:
        """The installation tokens handed out so far (of one installation, if given), oldest first."""
        with self._lock:
            issued = self._app.issued if self._app is not None else []
            return [copy.copy(t) for t in issued if installation_id is None or t.installation_id == installation_id]

    def expire_app_tokens(self) -> None:
        """Every installation token issued so far stops working now (as if revoked)."""
        with self._lock:
            if self._app is not None:
                self._app.expire_tokens()

    # --- webhooks -------------------------------------------------------------------------------
    def _installation_for(self, owner: str, repo: str, installation_id: int | None) -> int | None:
        if installation_id is not None or self._app is None:
            return installation_id
        return self._app.installation_of(owner, repo)

    def pull_request_event(self, owner: str, repo: str, number: int, action: str = "opened", *,
                           sender: str | None = None, installation_id: int | None = None,
                           before: str | None = None, merged: bool = False) -> dict[str, Any]:
        """A `pull_request` delivery's payload for the stored PR, after applying `action` to it as
        GitHub did (closed/reopened change its state, ready_for_review clears draft). `installation`
        is the App's installation on the repository (or `installation_id`); none without an App.
        `synchronize` has `before` (default: the parent of the head) and `after`."""
        with self._lock:
            pr = self._lookup(owner, repo, number)[1]
            _webhooks.apply_action(pr, action)
            return _webhooks.pull_request_payload(
                self.url, pr, action, sender=sender, before=before, merged=merged,
                installation_id=self._installation_for(owner, repo, installation_id))

    def issue_comment_event(self, owner: str, repo: str, number: int, body: str, *, author: str = "dev-alice",
                            author_association: str = "OWNER", action: str = "created",
                            on_pull_request: bool = True, installation_id: int | None = None) -> dict[str, Any]:
        """An `issue_comment` delivery's payload: `author` commented `body` on PR `number` (stored on
        it, as GitHub did), or on a plain issue with `on_pull_request=False` (no `pull_request` key
        in `issue`). `author_association` is OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, NONE, ..."""
        if author_association not in _webhooks.AUTHOR_ASSOCIATIONS:
            raise ValueError(f"not an author_association GitHub sends: {author_association!r}")
        with self._lock:
            base = self.url
            pr: PullRequest | None = self._lookup(owner, repo, number)[1] if on_pull_request else None
            comment = _webhooks.comment_json(base, owner, repo, number, pr, author, body, author_association)
            if pr is not None:
                comments = self._issue_comments.setdefault((owner, repo, number), [])
                comments.append(comment)
                issue = _webhooks.issue_json(base, owner, repo, number, title=pr.title, author=pr.author,
                                             state=pr.state, body=pr.body, comments=len(comments), pull=pr)
            else:
                issue = _webhooks.issue_json(base, owner, repo, number, title=f"Issue {number}", author=author,
                                             state="open", body="", comments=1, pull=None)
            return _webhooks.issue_comment_payload(
                base, owner, repo, issue, copy.deepcopy(comment), action=action, sender=author,
                installation_id=self._installation_for(owner, repo, installation_id))

    def ping_event(self, url: str, *, repository: tuple[str, str] | None = None,
                   sender: str = "acme-admin") -> dict[str, Any]:
        """The `ping` GitHub sends when the webhook at `url` is created: the App's hook when an App
        is installed, else `repository`'s."""
        with self._lock:
            app_id = self._app.app_id if self._app is not None else None
            return _webhooks.ping_payload(self.url, url, hook_id=self.hook_id, app_id=app_id,
                                          repository=repository, sender=sender)

    def _delivery(self, url: str, event: str, payload: dict[str, Any], secret: str | bytes | None,
                  delivery_id: str | None) -> tuple[bytes, dict[str, str], _webhooks.Delivery]:
        body = _webhooks.encode(payload)
        with self._lock:
            if self._app is not None:
                target = ("integration", self._app.app_id)
            else:
                target = ("repository", int((payload.get("repository") or {}).get("id") or 0))
        headers = _webhooks.delivery_headers(event, body, secret=secret, delivery_id=delivery_id,
                                             hook_id=self.hook_id, target_type=target[0], target_id=target[1])
        record = _webhooks.Delivery(headers["X-GitHub-Delivery"], event, url)
        with self._lock:
            self._deliveries.append(record)
        return body, headers, record

    def deliver(self, url: str, event: str, payload: dict[str, Any], *, secret: str | bytes | None,
                delivery_id: str | None = None, client: httpx.Client | None = None,
                timeout_s: float = 30.0) -> httpx.Response:
        """POST `payload` to `url` as GitHub delivers event `event`: signed with `secret` (None:
        unsigned, as a hook without a secret), `X-GitHub-Delivery` = `delivery_id` (default: a new
        UUID; pass the same one for a redelivery). Blocking: from async code use `adeliver`."""
        body, headers, record = self._delivery(url, event, payload, secret, delivery_id)
        if client is not None:
            response = client.post(url, content=body, headers=headers)
        else:
            with httpx.Client(timeout=timeout_s, follow_redirects=False) as own:
                response = own.post(url, content=body, headers=headers)
        record.status = response.status_code
        return response

    async def adeliver(self, url: str, event: str, payload: dict[str, Any], *, secret: str | bytes | None,
                       delivery_id: str | None = None, client: httpx.AsyncClient | None = None,
                       timeout_s: float = 30.0) -> httpx.Response:
        """`deliver` for async code (an ASGI app in the same loop: pass an AsyncClient on its transport)."""
        body, headers, record = self._delivery(url, event, payload, secret, delivery_id)
        if client is not None:
            response = await client.post(url, content=body, headers=headers)
        else:
            async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as own:
                response = await own.post(url, content=body, headers=headers)
        record.status = response.status_code
        return response

    @property
    def deliveries(self) -> list[_webhooks.Delivery]:
        """Every delivery sent, oldest first, with the receiver's status."""
        with self._lock:
            return list(self._deliveries)

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
            return _reviews.reviews_with_comments(self._lookup(owner, repo, number)[1])

    def posted_comments(self, owner: str, repo: str, number: int) -> list[dict[str, Any]]:
        """Every review comment on the PR (from reviews and single comments), oldest first."""
        with self._lock:
            return copy.deepcopy(self._lookup(owner, repo, number)[1].comments)

    # --- HTTP -----------------------------------------------------------------------------------
    def _routes(self) -> list[Route]:
        return [
            *super()._routes(),
            self._route("/rate_limit", self._get_rate_limit, ["GET"]),
            self._route(PULL + "/reviews", self._post_review, ["POST"]),
            self._route(PULL + "/reviews/{review_id:int}", self._put_review, ["PUT"]),
            self._route(PULL + "/comments", self._post_comment, ["POST"]),
            self._route(ISSUE + "/comments", self._get_issue_comments, ["GET"]),
            self._route(ISSUE + "/comments", self._post_issue_comment, ["POST"]),
            self._route(ISSUE_COMMENT, self._get_issue_comment, ["GET"]),
            self._route(ISSUE_COMMENT, self._patch_issue_comment, ["PATCH"]),
            self._route("/app", self._get_app, ["GET"]),
            self._route("/app/installations/{installation_id:int}", self._get_installation, ["GET"]),
            self._route("/app/installations/{installation_id:int}/access_tokens", self._post_access_token,
                        ["POST"]),
            self._route("/repos/{owner}/{repo}/installation", self._get_repo_installation, ["GET"]),
        ]

    async def _respond(self, request: Request, handler: Handler, payload: Any) -> Response:
        record = RecordedRequest(request.method, request.url.path, dict(request.query_params),
                                 dict(request.headers), payload)
        with self._lock:
            self._requests.append(record)
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        response = await super()._respond(request, handler, payload)
        with self._lock:
            headers = self.faults.headers(request)
            written = request.method != "GET" and response.status_code < 300
            after = self.write_faults.after(request) if written else None
        if after is not None:
            response = after.response
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        record.status = response.status_code
        return response

    def _admit(self, request: Request) -> None:
        """Authentication (the App's JWT and installation tokens, else the one token), injected
        faults, then the hourly budget, in GitHub's order."""
        if self._app is None or not self._app.admit(request):
            check_token(request, self.token)
        if request.url.path.startswith(_COUNTED_PREFIXES):
            self.faults.admit(request)

    def _author(self, request: Request) -> str:
        """Who a write is by: the App's bot for an installation token, else the reviewer."""
        if self._app is not None and self._app.token_of(request) is not None:
            return self._app.bot_login
        return self.reviewer_login

    # --- handlers (called under the lock) ---------------------------------------------------------
    def _require_app(self) -> FakeApp:
        if self._app is None:
            raise not_found()
        return self._app

    def _get_app(self, request: Request, payload: Any) -> Response:
        return JSONResponse(self._require_app().app_json(base_url(request)))

    def _get_installation(self, request: Request, payload: Any, installation_id: int) -> Response:
        return JSONResponse(self._require_app().installation_json(base_url(request), installation_id))

    def _post_access_token(self, request: Request, payload: Any, installation_id: int) -> Response:
        return JSONResponse(self._require_app().issue_token(installation_id), status_code=201)

    def _get_repo_installation(self, request: Request, payload: Any, owner: str, repo: str) -> Response:
        return JSONResponse(self._require_app().repository_installation_json(base_url(request), owner, repo))

    def _get_rate_limit(self, request: Request, payload: Any) -> Response:
        return JSONResponse(self.faults.rate_limit_json(request))

    def _post_review(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        return JSONResponse(_reviews.post_review(pr, payload, base_url(request), self._author(request)))

    def _put_review(self, request: Request, payload: Any, owner: str, repo: str, number: int,
                    review_id: int) -> Response:
        review = self._find_review(self._lookup(owner, repo, number)[1], review_id)
        return JSONResponse(_reviews.update_review(review, payload))

    def _post_comment(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        comment = _reviews.post_comment(pr, payload, base_url(request), self._author(request))
        return JSONResponse(comment, status_code=201)

    def _get_issue_comments(self, request: Request, payload: Any, owner: str, repo: str, number: int) -> Response:
        self._lookup(owner, repo, number)
        return paginate(request, self._issue_comments.get((owner, repo, number), []))

    def _post_issue_comment(self, request: Request, payload: Any, owner: str, repo: str,
                            number: int) -> Response:
        pr = self._lookup(owner, repo, number)[1]
        comments = self._issue_comments.setdefault((owner, repo, number), [])
        comment = _reviews.post_issue_comment(comments, pr, payload, base_url(request), self._author(request))
        return JSONResponse(comment, status_code=201)

    def _find_issue_comment(self, owner: str, repo: str, comment_id: int) -> dict[str, Any]:
        for (o, r, _), comments in self._issue_comments.items():
            for comment in comments:
                if (o, r) == (owner, repo) and comment["id"] == comment_id:
                    return comment
        raise not_found()

    def _get_issue_comment(self, request: Request, payload: Any, owner: str, repo: str,
                           comment_id: int) -> Response:
        return JSONResponse(self._find_issue_comment(owner, repo, comment_id))

    def _patch_issue_comment(self, request: Request, payload: Any, owner: str, repo: str,
                             comment_id: int) -> Response:
        comment = self._find_issue_comment(owner, repo, comment_id)
        if comment["user"]["login"] != self._author(request):
            raise error(403, "Resource not accessible by integration")
        return JSONResponse(_reviews.update_issue_comment(comment, payload))
