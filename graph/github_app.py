"""A GitHub App's own side: who it is, where it is installed, and its installation tokens.

PyGithub speaks for the App (`github.Auth.AppAuth` signs a short JWT, RS256 with the App's key,
for each request; `github.GithubIntegration` sends it). PyGithub is synchronous: every call runs
in a worker thread, one at a time (its connection object keeps a request's state between sending
and reading, so two threads must not share it), and only ever to the configured API host (paths
relative to `api_url`, no redirect to another host followed).

Installation tokens are cached per installation until `refresh_before_s` before their
`expires_at`; one refresh at a time per installation. A token is kept as a `SecretStr`: it is in
no repr, no log line (PyGithub's debug line that carries the token's answer is dropped), no
exception message. `graph.github.GitHubClient` asks for it per request and sends it; nothing else
needs it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from github import Auth, GithubException, GithubIntegration
from pydantic import SecretStr
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from prreview.errors import GitHubError, GitHubRateLimited, GitHubTransient, PRNotFound

log = logging.getLogger(__name__)

T = TypeVar("T")

TOKEN_REFRESH_BEFORE_S = 300.0  # a cached installation token is renewed this long before it expires
INSTALLATION_CACHE_S = 600.0  # how long `installation_for` remembers a repository's installation


class GitHubAppNotInstalled(PRNotFound):
    """The App is not installed on the repository (or cannot see it): its PRs are not visible."""


class _DropTokenAnswers(logging.Filter):
    """PyGithub's DEBUG line of a request holds the response body: for an installation token, the
    token itself. Drop those lines; the rest of PyGithub's debugging stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return "access_tokens" not in record.getMessage()
        except Exception:  # a malformed record: not ours to judge, let logging report it
            return True


_PYGITHUB_LOGGER = logging.getLogger("github.Requester")
if not any(isinstance(f, _DropTokenAnswers) for f in _PYGITHUB_LOGGER.filters):
    _PYGITHUB_LOGGER.addFilter(_DropTokenAnswers())


@dataclass(frozen=True)
class _Token:
    value: SecretStr
    expires_at: float  # seconds since the epoch, as GitHub said

    def fresh(self, now: float, margin_s: float) -> bool:
        return now < self.expires_at - margin_s


class GitHubApp:
    """One GitHub App, acting as itself (JWT) towards `api_url`. Constructing it does no I/O; it
    checks that `private_key` is an RSA key in PEM form (ValueError otherwise, without the key).

    Used from one event loop (its per-installation locks belong to it); `clock` is the wall clock
    that token expiry is compared with (tests move it)."""

    def __init__(self, api_url: str, app_id: int, private_key: SecretStr | str, *, timeout_s: float = 30.0,
                 refresh_before_s: float = TOKEN_REFRESH_BEFORE_S,
                 installation_cache_s: float = INSTALLATION_CACHE_S, attempts: int = 3,
                 clock: Callable[[], float] = time.time) -> None:
        pem = private_key.get_secret_value() if isinstance(private_key, SecretStr) else private_key
        _check_private_key(pem)
        self.api_url = api_url.rstrip("/")
        self.app_id = app_id
        self.refresh_before_s = refresh_before_s
        self.installation_cache_s = installation_cache_s
        self._attempts = attempts
        self._clock = clock
        self._integration = GithubIntegration(
            auth=Auth.AppAuth(app_id, pem), base_url=self.api_url, timeout=max(1, math.ceil(timeout_s)),
            user_agent="pr-review", seconds_between_requests=None, seconds_between_writes=None)
        self._thread_lock = threading.Lock()  # PyGithub's connection is not shared between threads
        self._tokens: dict[int, _Token] = {}
        self._token_locks: dict[int, asyncio.Lock] = {}
        self._installations: dict[tuple[str, str], tuple[int, float]] = {}  # (owner, repo) -> (id, until)
        self._login: str | None = None

    def __repr__(self) -> str:
        return f"GitHubApp(app_id={self.app_id}, api_url={self.api_url!r})"

    def close(self) -> None:
        self._integration.close()

    # --- installation tokens --------------------------------------------------------------------
    async def installation_token(self, installation_id: int) -> str:
        """A token of the installation, from the cache while it has more than `refresh_before_s`
        left, else a new one (`POST /app/installations/{id}/access_tokens`). Send it, never log it."""
        token = self._cached(installation_id)
        if token is None:
            async with self._token_locks.setdefault(installation_id, asyncio.Lock()):
                token = self._cached(installation_id)  # another task may have refreshed it meanwhile
                if token is None:
                    token = await self._create_token(installation_id)
                    self._tokens[installation_id] = token
        return token.value.get_secret_value()

    def forget_token(self, installation_id: int, token: str | None = None) -> None:
        """Drop the cached token (only if it is still `token`, when given): GitHub refused it before
        its time (revoked, or the installation's permissions changed)."""
        cached = self._tokens.get(installation_id)
        if cached is not None and (token is None or cached.value.get_secret_value() == token):
            del self._tokens[installation_id]

    def _cached(self, installation_id: int) -> _Token | None:
        token = self._tokens.get(installation_id)
        return token if token is not None and token.fresh(self._clock(), self.refresh_before_s) else None

    async def _create_token(self, installation_id: int) -> _Token:
        def create() -> _Token:
            answer = self._integration.get_access_token(installation_id)
            return _Token(SecretStr(answer.token), answer.expires_at.timestamp())

        token = await self._call(f"POST /app/installations/{installation_id}/access_tokens", create,
                                 not_found=f"The GitHub App has no installation {installation_id}.")
        log.info("new token for GitHub App installation %s, valid for %.0f s", installation_id,
                 token.expires_at - self._clock())
        return token

    # --- the App itself ---------------------------------------------------------------------------
    async def installation_for(self, owner: str, repo: str) -> int:
        """The id of the App's installation that covers owner/repo (`GET /repos/{o}/{r}/installation`,
        remembered for `installation_cache_s`). `GitHubAppNotInstalled` when there is none."""
        key = (owner.lower(), repo.lower())
        hit = self._installations.get(key)
        if hit is not None and hit[1] > self._clock():
            return hit[0]

        def lookup() -> int:
            return int(self._integration.get_repo_installation(owner, repo).id)

        installation_id = await self._call(
            f"GET /repos/{owner}/{repo}/installation", lookup,
            not_found=f"The GitHub App is not installed on {owner}/{repo}; install it there to review its PRs.")
        self._installations[key] = (installation_id, self._clock() + self.installation_cache_s)
        return installation_id

    async def app_login(self) -> str:
        """The login the App's comments and reviews carry: `<slug>[bot]` (`GET /app`, asked once)."""
        if self._login is None:
            slug = await self._call("GET /app", lambda: str(self._integration.get_app().slug))
            self._login = f"{slug}[bot]"
        return self._login

    # --- transport --------------------------------------------------------------------------------
    async def _call(self, what: str, fn: Callable[[], T], *, not_found: str | None = None) -> T:
        """Run one PyGithub call in a worker thread; its failures become pr-review's GitHub errors.
        Transient ones are tried again (each of these calls may be repeated safely: a second token
        request just makes another token)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(GitHubTransient), stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=0.5, max=4), reraise=True,
        ):
            with attempt:
                return await asyncio.to_thread(self._locked, what, fn, not_found)
        raise AssertionError("unreachable")

    def _locked(self, what: str, fn: Callable[[], T], not_found: str | None) -> T:
        with self._thread_lock:
            try:
                return fn()
            except GithubException as exc:
                raise _github_error(what, exc, not_found) from None  # its text may quote the answer
            except requests.Timeout as exc:
                raise GitHubTransient(f"GitHub did not answer in time ({what}).") from exc
            except requests.RequestException as exc:
                raise GitHubTransient(f"GitHub is unreachable ({what}): {type(exc).__name__}.") from exc
            except RuntimeError as exc:  # PyGithub's refusal to follow a redirect elsewhere
                raise GitHubError(f"GitHub answered {what} with a redirect pr-review does not follow.") from exc


def _check_private_key(pem: str) -> None:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("The GitHub App's private key is not a PEM private key without a passphrase "
                         "(GITHUB_APP_PRIVATE_KEY or GITHUB_APP_PRIVATE_KEY_FILE).") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("The GitHub App's private key must be an RSA key (GitHub signs with RS256).")


def _github_error(what: str, exc: GithubException, not_found: str | None) -> GitHubError:
    status = exc.status
    data: Any = exc.data
    message = str(data.get("message", ""))[:200] if isinstance(data, dict) else ""
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    if status == 404 and not_found is not None:
        return GitHubAppNotInstalled(not_found)
    if status in (403, 429) and ("retry-after" in headers or headers.get("x-ratelimit-remaining") == "0"):
        return GitHubRateLimited(f"GitHub's rate limit is exhausted ({what}).", retry_after_s=_retry_after(headers))
    if status == 401:
        return GitHubError(f"GitHub refused the App's credentials ({what}: 401 {message}); check GITHUB_APP_ID "
                           "and the App's private key.")
    if status >= 500:
        return GitHubTransient(f"GitHub answered {status} to {what}.")
    return GitHubError(f"GitHub answered {status} to {what}: {message}")


def _retry_after(headers: dict[str, str]) -> float:
    try:
        if "retry-after" in headers:
            return max(float(headers["retry-after"]), 0.0)
        return max(float(headers.get("x-ratelimit-reset", 0)) - time.time(), 0.0) + 0.5
    except ValueError:
        return 60.0
