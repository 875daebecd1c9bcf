"""GitHub REST client: only the configured API host, rate limits waited out within a bound,
and writes sent once.

Reads (GET) are retried on timeouts and 5xx answers. A write (POST, PUT, PATCH, DELETE) is
retried only when it never reached GitHub (no connection); after a timeout or a 5xx GitHub may
have done it anyway, so the client raises `GitHubWriteUncertain` and leaves it to the caller to
look for what it wrote (by its marker, see `graph.publish`) before writing again.

A rate limit is waited out until its reset when that comes before the deadline of the current
`github_wait_budget` scope (the runner opens one around each job's graph run), and within
`rate_limit_max_wait_s` outside any scope.

As a GitHub App (`app=`), each request carries a token of an installation: the one a view from
`for_installation(id)` is pinned to, else the installation that covers the request's repository
(`/repos/{owner}/{repo}/...`). Tokens come from `graph.github_app.GitHubApp`, cached there, and a
token GitHub refuses (401) is dropped and replaced once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from graph.github_app import GitHubApp
from prreview.errors import GitHubError, GitHubRateLimited, GitHubTransient, PRNotFound
from prreview.urls import PRRef

log = logging.getLogger(__name__)

MAX_FILES = 3000  # GitHub lists at most 3000 files of a PR
MAX_COMPARE_FILES = 300  # the compare API lists at most 300 files, on its first page only
MAX_ISSUE_COMMENTS = 5000  # of a PR's conversation, read when looking for our summary comment
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_wait_deadline: ContextVar[float | None] = ContextVar("github_wait_deadline", default=None)


@contextmanager
def github_wait_budget(deadline_monotonic: float | None) -> Iterator[None]:
    """Within this scope a GitHub rate limit is waited out when it resets before
    `deadline_monotonic` (a `time.monotonic()` value), however far off that is; a reset after it
    fails the request with `GitHubRateLimited` at once. Tasks started inside the scope (LangGraph's
    node tasks) inherit it. None: the client's `rate_limit_max_wait_s` applies, as outside."""
    token = _wait_deadline.set(deadline_monotonic)
    try:
        yield
    finally:
        _wait_deadline.reset(token)


class GitHubNotSent(GitHubTransient):
    """The request never reached GitHub (no connection): safe to send again, a write included."""


class GitHubWriteUncertain(GitHubTransient):
    """A write got no clear answer (a timeout, a 5xx): GitHub may or may not have done it. Look
    for it before writing again."""


@dataclass
class PRFile:
    path: str
    status: str
    additions: int
    deletions: int
    patch: str | None
    previous_path: str | None = None
    sha: str | None = None


@dataclass
class PullRequest:
    ref: PRRef
    title: str
    body: str
    author: str
    head_sha: str
    base_sha: str
    base_ref: str
    html_url: str
    files: list[PRFile] = field(default_factory=list)
    commit_messages: list[str] = field(default_factory=list)
    commit_shas: list[str] = field(default_factory=list)  # oldest first, as commit_messages


@dataclass
class Comparison:
    """`GET /compare/base...head`: `status` is "ahead" when head descends from base."""

    status: str
    files: list[PRFile]
    truncated: bool  # GitHub listed its maximum of files: the list may be incomplete


class GitHubClient:
    """Async client of the few endpoints a review needs. The token stays in this object's
    headers: it is never logged, never put in graph state, never sent to another host.

    With `app` (a GitHub App; `token` must then be None) requests carry installation tokens; see
    `for_installation` and `installation_id`. Constructing it does no I/O."""

    def __init__(self, api_url: str, token: str | None, *, timeout_s: float = 30.0,
                 rate_limit_max_wait_s: float = 60.0, transient_attempts: int = 4,
                 app: GitHubApp | None = None) -> None:
        if token and app is not None:
            raise ValueError("GitHubClient acts with a token or as a GitHub App, not both")
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": "pr-review"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=api_url, headers=headers, timeout=timeout_s,
                                       follow_redirects=False)
        self._api_host = httpx.URL(api_url).host
        self._api_path = httpx.URL(api_url).path.rstrip("/")  # GitHub Enterprise: /api/v3
        self.rate_limit_max_wait_s = rate_limit_max_wait_s
        self.transient_attempts = transient_attempts
        self._login: str | None = None
        self._app = app
        self._installation: int | None = None  # a view's installation (see for_installation)
        self._owns_http = True

    def __repr__(self) -> str:
        mode = (f"app={self._app.app_id}, installation={self._installation}" if self._app is not None
                else f"token={'Authorization' in self._http.headers}")
        return f"GitHubClient({str(self._http.base_url)!r}, {mode})"

    async def aclose(self) -> None:
        """Closes the connection pool (and the App's); a view from `for_installation` closes nothing."""
        if not self._owns_http:
            return
        await self._http.aclose()
        if self._app is not None:
            await asyncio.to_thread(self._app.close)

    # --- as a GitHub App ------------------------------------------------------------------------
    @property
    def app(self) -> GitHubApp | None:
        """The GitHub App this client acts as, or None (a token, or anonymous)."""
        return self._app

    @property
    def installation(self) -> int | None:
        """The installation a view acts for; None for the client itself."""
        return self._installation

    def for_installation(self, installation_id: int | None) -> GitHubClient:
        """A view of this client that acts for one installation of the App: every request carries
        that installation's token (fetched and refreshed by the App), so it reaches only the
        installation's repositories. It shares this client's connection pool and costs no I/O.
        Without an App, or with None, this client itself (a token acts the same for every repo;
        the client itself finds each repository's installation)."""
        if self._app is None or installation_id is None:
            return self
        view = copy.copy(self)
        view._installation = installation_id
        view._owns_http = False
        return view

    async def installation_id(self, owner: str, repo: str) -> int | None:
        """The id of the App's installation on owner/repo (asked once, then remembered a while);
        None without an App. Raises `graph.github_app.GitHubAppNotInstalled` (a `PRNotFound`)
        when the App is not installed there."""
        if self._app is None:
            return None
        return await self._app.installation_for(owner, repo)

    async def _authorization(self, url: str) -> tuple[dict[str, str], int | None]:
        """The Authorization header an App request carries, and whose installation it is."""
        if self._app is None:
            return {}, None
        installation = self._installation
        if installation is None:
            repo = self._repository_of(url)
            if repo is None:
                return {}, None  # not about a repository (/rate_limit): anonymous
            installation = await self._app.installation_for(*repo)
        token = await self._app.installation_token(installation)
        return {"Authorization": f"Bearer {token}"}, installation

    def _repository_of(self, url: str) -> tuple[str, str] | None:
        parsed = httpx.URL(url)
        path = parsed.path
        if parsed.is_absolute_url and self._api_path and path.startswith(self._api_path + "/"):
            path = path[len(self._api_path):]
        parts = path.split("/")
        if len(parts) >= 4 and parts[0] == "" and parts[1] == "repos" and parts[2] and parts[3]:
            return unquote(parts[2]), unquote(parts[3])
        return None

    # --- transport ------------------------------------------------------------------------------
    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if httpx.URL(url).is_absolute_url and httpx.URL(url).host != self._api_host:
            raise GitHubError(f"Refusing to follow a link to another host: {httpx.URL(url).host}")
        waited = 0.0
        while True:
            response = await self._with_transient_retries(method, url, **kwargs)
            delay = _rate_limit_delay(response)
            if delay is None:
                return response  # a rate-limited request was not done: it is sent again below
            self._check_wait(delay, waited)
            log.warning("GitHub rate limit hit; waiting %.1f s", delay)
            await asyncio.sleep(delay)
            waited += delay

    def _check_wait(self, delay: float, waited: float) -> None:
        deadline = _wait_deadline.get()
        if deadline is not None:
            left = deadline - time.monotonic()
            if delay > left:
                raise GitHubRateLimited(
                    f"GitHub's rate limit is exhausted; it resets in {delay:.0f} s, after the review's "
                    f"deadline ({max(left, 0):.0f} s from now).", retry_after_s=delay)
        elif waited + delay > self.rate_limit_max_wait_s:
            raise GitHubRateLimited(
                f"GitHub's rate limit is exhausted; it resets in {delay:.0f} s, longer than the "
                f"{self.rate_limit_max_wait_s:.0f} s pr-review waits.", retry_after_s=delay)

    async def _with_transient_retries(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        write = method.upper() not in READ_METHODS
        # A write is sent again only when it cannot have reached GitHub.
        retryable = GitHubNotSent if write else GitHubTransient
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(retryable), stop=stop_after_attempt(self.transient_attempts),
            wait=wait_exponential_jitter(multiplier=0.5, max=8), reraise=True,
        ):
            with attempt:
                uncertain = GitHubWriteUncertain if write else GitHubTransient
                response, installation, auth = await self._send(method, url, uncertain, **kwargs)
                if response.status_code == 401 and installation is not None and self._app is not None:
                    # Refused before its time (revoked): nothing was done; once more with a new token.
                    self._app.forget_token(installation, auth["Authorization"].removeprefix("Bearer "))
                    response, _, _ = await self._send(method, url, uncertain, **kwargs)
                if response.status_code >= 500:
                    raise uncertain(f"GitHub answered {response.status_code} to {method} {url}.")
                return response
        raise AssertionError("unreachable")

    async def _send(self, method: str, url: str, uncertain: type[GitHubTransient],
                    **kwargs: Any) -> tuple[httpx.Response, int | None, dict[str, str]]:
        try:
            auth, installation = await self._authorization(url)
        except GitHubTransient as exc:  # no token yet: the request itself never left
            raise GitHubNotSent(f"No GitHub App token for {method} {url}: {exc.message}") from exc
        try:
            response = await self._http.request(method, url, headers=auth, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise GitHubNotSent(f"GitHub is unreachable: {type(exc).__name__}.") from exc
        except httpx.TimeoutException as exc:
            raise uncertain(f"GitHub did not answer in time ({method} {url}).") from exc
        except httpx.TransportError as exc:
            raise uncertain(f"GitHub's answer was lost: {type(exc).__name__} ({method} {url}).") from exc
        return response, installation, auth

    async def _get_json(self, url: str, *, params: dict[str, Any] | None = None,
                        ref: PRRef | None = None) -> tuple[Any, httpx.Response]:
        response = await self._request("GET", url, params=params)
        if response.status_code == 404 and ref is not None:
            raise PRNotFound(f"Pull request {ref.full_name}#{ref.number} does not exist or is not visible.")
        if response.status_code >= 400:
            raise GitHubError(f"GitHub answered {response.status_code} to GET {url}: {_message(response)}")
        return response.json(), response

    async def _paginate(self, url: str, ref: PRRef, limit: int) -> list[Any]:
        items: list[Any] = []
        next_url: str | None = url
        params: dict[str, Any] | None = {"per_page": 100}
        while next_url and len(items) < limit:
            page, response = await self._get_json(next_url, params=params, ref=ref)
            items.extend(page)
            next_url = response.links.get("next", {}).get("url")
            params = None  # the next link carries its own query
        return items[:limit]

    # --- endpoints ------------------------------------------------------------------------------
    async def head_sha(self, ref: PRRef) -> str:
        data, _ = await self._get_json(f"/repos/{ref.owner}/{ref.repo}/pulls/{ref.number}", ref=ref)
        return str(data["head"]["sha"])

    async def pull_request(self, ref: PRRef) -> PullRequest:
        base = f"/repos/{ref.owner}/{ref.repo}/pulls/{ref.number}"
        data, _ = await self._get_json(base, ref=ref)
        files = await self._paginate(f"{base}/files", ref, MAX_FILES)
        commits = await self._paginate(f"{base}/commits", ref, 250)
        return PullRequest(
            ref=ref, title=data.get("title") or "", body=data.get("body") or "",
            author=(data.get("user") or {}).get("login", ""), head_sha=data["head"]["sha"],
            base_sha=data["base"]["sha"], base_ref=data["base"].get("ref", ""),
            html_url=data.get("html_url", ""),
            files=[_pr_file(f) for f in files],
            commit_messages=[c.get("commit", {}).get("message", "") for c in commits],
            commit_shas=[str(c.get("sha", "")) for c in commits],
        )

    async def post_review(self, ref: PRRef, payload: dict[str, Any]) -> httpx.Response:
        return await self._request("POST", f"/repos/{ref.owner}/{ref.repo}/pulls/{ref.number}/reviews",
                                   json=payload)

    async def post_review_comment(self, ref: PRRef, payload: dict[str, Any]) -> httpx.Response:
        """One inline comment outside any review (`commit_id`, `path`, `line`, `side`, `body`)."""
        return await self._request("POST", f"/repos/{ref.owner}/{ref.repo}/pulls/{ref.number}/comments",
                                   json=payload)

    async def update_review(self, ref: PRRef, review_id: int, body: str) -> dict[str, Any]:
        url = f"/repos/{ref.owner}/{ref.repo}/pulls/{ref.number}/reviews/{review_id}"
        response = await self._request("PUT", url, json={"body": body})
        if response.status_code >= 400:
            raise GitHubError(f"GitHub answered {response.status_code} to PUT {url}: {_message(response)}")
        return dict(response.json())

    async def list_issue_comments(self, ref: PRRef) -> list[dict[str, Any]]:
        """The PR's conversation comments (not inline ones), oldest first."""
        return await self._paginate(f"/repos/{ref.owner}/{ref.repo}/issues/{ref.number}/comments", ref,
                                    MAX_ISSUE_COMMENTS)

    async def issue_comment(self, ref: PRRef, comment_id: int) -> dict[str, Any] | None:
        """One conversation comment; None when it no longer exists."""
        url = f"/repos/{ref.owner}/{ref.repo}/issues/comments/{comment_id}"
        response = await self._request("GET", url)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise GitHubError(f"GitHub answered {response.status_code} to GET {url}: {_message(response)}")
        return dict(response.json())

    async def create_issue_comment(self, ref: PRRef, body: str) -> httpx.Response:
        return await self._request("POST", f"/repos/{ref.owner}/{ref.repo}/issues/{ref.number}/comments",
                                   json={"body": body})

    async def update_issue_comment(self, ref: PRRef, comment_id: int, body: str) -> httpx.Response:
        return await self._request("PATCH", f"/repos/{ref.owner}/{ref.repo}/issues/comments/{comment_id}",
                                   json={"body": body})

    async def list_reviews(self, ref: PRRef) -> list[dict[str, Any]]:
        """The PR's reviews, oldest first, as GitHub returns them."""
        return await self._paginate(f"/repos/{ref.owner}/{ref.repo}/pulls/{ref.number}/reviews", ref, 1000)

    async def list_review_comments(self, ref: PRRef) -> list[dict[str, Any]]:
        """Every inline review comment of the PR, oldest first."""
        return await self._paginate(f"/repos/{ref.owner}/{ref.repo}/pulls/{ref.number}/comments", ref, 3000)

    async def authenticated_login(self) -> str | None:
        """Who we are on GitHub: the login the token acts as (asked once, then remembered); as a
        GitHub App its bot, `<slug>[bot]` (an App's failure to say raises: never trust any bot);
        None when anonymous or when the token cannot say. The one place that says whose comments
        and markers are ours."""
        if self._login is not None:
            return self._login
        if self._app is not None:
            self._login = await self._app.app_login()
            return self._login
        if "Authorization" not in self._http.headers:
            return None
        response = await self._request("GET", "/user")
        if response.status_code != 200:
            return None
        login = response.json().get("login")
        self._login = str(login) if login else None
        return self._login

    async def file_content(self, ref: PRRef, path: str, at: str) -> bytes | None:
        """A file's bytes at commit `at`; None when it does not exist there or is too large for
        the contents API (over 1 MB)."""
        url = f"/repos/{ref.owner}/{ref.repo}/contents/{quote(path)}"
        response = await self._request("GET", url, params={"ref": at})
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise GitHubError(f"GitHub answered {response.status_code} to GET {url}: {_message(response)}")
        data = response.json()
        if not isinstance(data, dict) or data.get("type") != "file" or data.get("encoding") != "base64":
            return None  # a directory, a submodule, or a file too large to be sent inline
        try:
            return base64.b64decode(data.get("content") or "")
        except (binascii.Error, ValueError):
            return None

    async def compare(self, ref: PRRef, base: str, head: str) -> Comparison:
        """Files changed from commit `base` to commit `head` (GitHub's three-dot compare)."""
        url = f"/repos/{ref.owner}/{ref.repo}/compare/{base}...{head}"
        data, _ = await self._get_json(url, params={"per_page": 1})  # files come on page 1 only
        files = [_pr_file(f) for f in data.get("files") or []]
        return Comparison(status=str(data.get("status", "")), files=files,
                          truncated=len(files) >= MAX_COMPARE_FILES)


def _pr_file(data: dict[str, Any]) -> PRFile:
    return PRFile(path=data["filename"], status=data.get("status", "modified"),
                  additions=data.get("additions", 0), deletions=data.get("deletions", 0),
                  patch=data.get("patch"), previous_path=data.get("previous_filename"), sha=data.get("sha"))


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", ""))[:200]
    except ValueError:
        return response.text[:200]


def _rate_limit_delay(response: httpx.Response) -> float | None:
    """Seconds to wait when GitHub says its rate limit is hit (primary or secondary), else None."""
    if response.status_code not in (403, 429):
        return None
    retry_after = response.headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(float(retry_after), 0.0)
        except ValueError:
            return 60.0
    if response.headers.get("x-ratelimit-remaining") == "0":
        reset = float(response.headers.get("x-ratelimit-reset", time.time() + 60))
        return max(reset - time.time(), 0.0) + 0.5
    if response.status_code == 429:
        return 60.0
    return None  # a plain 403 is a permission error, not a rate limit
