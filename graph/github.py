"""GitHub REST client: only the configured API host, rate limits waited out within a bound."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from prreview.errors import GitHubError, GitHubRateLimited, GitHubTransient, PRNotFound
from prreview.urls import PRRef

log = logging.getLogger(__name__)

MAX_FILES = 3000  # GitHub lists at most 3000 files of a PR
MAX_COMPARE_FILES = 300  # the compare API lists at most 300 files, on its first page only


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
    headers: it is never logged, never put in graph state, never sent to another host."""

    def __init__(self, api_url: str, token: str | None, *, timeout_s: float = 30.0,
                 rate_limit_max_wait_s: float = 60.0, transient_attempts: int = 4) -> None:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                   "User-Agent": "pr-review"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=api_url, headers=headers, timeout=timeout_s,
                                       follow_redirects=False)
        self._api_host = httpx.URL(api_url).host
        self.rate_limit_max_wait_s = rate_limit_max_wait_s
        self.transient_attempts = transient_attempts

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- transport ------------------------------------------------------------------------------
    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if httpx.URL(url).is_absolute_url and httpx.URL(url).host != self._api_host:
            raise GitHubError(f"Refusing to follow a link to another host: {httpx.URL(url).host}")
        waited = 0.0
        while True:
            response = await self._with_transient_retries(method, url, **kwargs)
            delay = _rate_limit_delay(response)
            if delay is None:
                return response
            if waited + delay > self.rate_limit_max_wait_s:
                raise GitHubRateLimited(
                    f"GitHub's rate limit is exhausted; it resets in {delay:.0f} s, longer than the "
                    f"{self.rate_limit_max_wait_s:.0f} s pr-review waits.", retry_after_s=delay)
            log.warning("GitHub rate limit hit; waiting %.1f s", delay)
            await asyncio.sleep(delay)
            waited += delay

    async def _with_transient_retries(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(GitHubTransient), stop=stop_after_attempt(self.transient_attempts),
            wait=wait_exponential_jitter(initial=0.5, max=8), reraise=True,
        ):
            with attempt:
                try:
                    response = await self._http.request(method, url, **kwargs)
                except httpx.TimeoutException as exc:
                    raise GitHubTransient(f"GitHub did not answer in time ({method} {url}).") from exc
                except httpx.TransportError as exc:
                    raise GitHubTransient(f"GitHub is unreachable: {type(exc).__name__}.") from exc
                if response.status_code >= 500:
                    raise GitHubTransient(f"GitHub answered {response.status_code} to {method} {url}.")
                return response
        raise AssertionError("unreachable")

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

    async def list_reviews(self, ref: PRRef) -> list[dict[str, Any]]:
        """The PR's reviews, oldest first, as GitHub returns them."""
        return await self._paginate(f"/repos/{ref.owner}/{ref.repo}/pulls/{ref.number}/reviews", ref, 1000)

    async def list_review_comments(self, ref: PRRef) -> list[dict[str, Any]]:
        """Every inline review comment of the PR, oldest first."""
        return await self._paginate(f"/repos/{ref.owner}/{ref.repo}/pulls/{ref.number}/comments", ref, 3000)

    async def authenticated_login(self) -> str | None:
        """The login the token acts as; None when anonymous or when the token cannot say (an app)."""
        if "Authorization" not in self._http.headers:
            return None
        response = await self._request("GET", "/user")
        if response.status_code != 200:
            return None
        login = response.json().get("login")
        return str(login) if login else None

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
