"""A GitHub App on the fake GitHub: its JWT, its installations, and their tokens.

`GET /app`, `GET /app/installations/{id}`, `GET /repos/{o}/{r}/installation` and
`POST /app/installations/{id}/access_tokens` need the App's JWT, checked as GitHub does: RS256 with
the App's key, `iss` the App id (a number or its string), `iat` not in the future, `exp` not past
and at most 10 minutes ahead (and at most 10 minutes plus the recommended 60 s of back-dating
after `iat`). A bad one gets 401 with GitHub's JSON error. An installation token (`ghs_...`) is
good until it expires (`token_ttl_s`), reaches only its installation's repositories (404 for
others, as GitHub), and what it posts is authored by `<slug>[bot]` (type Bot). Called under the
fake's lock.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from starlette.requests import Request

from prreview.demo._github_http import error, not_found
from prreview.demo._github_model import now_iso
from tests.fakes.github._accounts import account_json

MAX_JWT_AHEAD_S = 600  # GitHub: `exp` no more than 10 minutes into the future
BACKDATE_S = 60  # GitHub recommends `iat` 60 s in the past against clock drift
CLOCK_DRIFT_S = 30  # what the fake forgives of a client's clock
TOKEN_TTL_S = 3600.0  # an installation token lives an hour
PERMISSIONS = {"contents": "read", "issues": "write", "metadata": "read", "pull_requests": "write"}
EVENTS = ["issue_comment", "pull_request"]
_TOKEN_ALPHABET = string.ascii_letters + string.digits


@dataclass
class IssuedToken:
    """An installation token the fake handed out."""

    token: str
    installation_id: int
    issued_at: float  # time.time()
    expires_at: float

    def valid(self, now: float) -> bool:
        return now < self.expires_at


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _credential(request: Request) -> str | None:
    """What the Authorization header carries after its scheme (`Bearer` or `token`)."""
    auth = request.headers.get("authorization")
    if not auth:
        return None
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "token") and value.strip() else None


def _looks_like_jwt(credential: str) -> bool:
    return credential.startswith("eyJ") and credential.count(".") == 2


def _repository_of(path: str) -> tuple[str, str] | None:
    parts = path.split("/")
    if len(parts) >= 4 and parts[1] == "repos" and parts[2] and parts[3]:
        return parts[2].lower(), parts[3].lower()
    return None


def _is_app_path(path: str) -> bool:
    """The endpoints that take the App's JWT (and nothing else)."""
    parts = path.split("/")
    return path == "/app" or path.startswith("/app/") or (len(parts) == 5 and parts[1] == "repos"
                                                          and parts[4] == "installation")


class FakeApp:
    """One GitHub App installed on the fake, with `installations` {id: [(owner, repo), ...]}."""

    def __init__(self, app_id: int, public_key_pem: str | bytes, *, slug: str,
                 installations: Mapping[int, Iterable[tuple[str, str]]], token_ttl_s: float = TOKEN_TTL_S) -> None:
        self.app_id = app_id
        self.public_key_pem = public_key_pem
        self.slug = slug
        self.installations = {int(i): {(o.lower(), r.lower()) for o, r in repos} for i, repos in installations.items()}
        self._accounts = {int(i): next(iter(sorted(repos)), ("acme", ""))[0] for i, repos in
                          self.installations.items()}
        self.token_ttl_s = token_ttl_s
        self.issued: list[IssuedToken] = []
        self._by_token: dict[str, IssuedToken] = {}
        self.created_at = now_iso()

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"

    def installation_of(self, owner: str, repo: str) -> int | None:
        key = (owner.lower(), repo.lower())
        return next((i for i, repos in self.installations.items() if key in repos), None)

    # --- authentication -------------------------------------------------------------------------
    def admit(self, request: Request) -> bool:
        """Check a request that is the App's business (an App endpoint, a JWT, an installation
        token): raise GitHub's reply when it is refused, True when let in. False: not the App's
        business (a personal token, anonymous), for the fake's other checks."""
        path = request.url.path
        credential = _credential(request)
        if _is_app_path(path):
            self.check_jwt(credential)
            return True
        if credential is None:
            return False
        if _looks_like_jwt(credential):
            raise error(401, "A JSON web token could not be used to access this endpoint; use an installation "
                             "token")
        if not credential.startswith("ghs_"):
            return False
        issued = self._by_token.get(credential)
        if issued is None or not issued.valid(time.time()):
            raise error(401, "Bad credentials")
        repository = _repository_of(path)
        if repository is not None and repository not in self.installations.get(issued.installation_id, set()):
            raise not_found()
        if path == "/user" or path.startswith("/user/"):
            raise error(403, "Resource not accessible by integration")
        return True

    def token_of(self, request: Request) -> IssuedToken | None:
        """The valid installation token the request carries, if any."""
        credential = _credential(request)
        issued = self._by_token.get(credential) if credential else None
        return issued if issued is not None and issued.valid(time.time()) else None

    def check_jwt(self, credential: str | None) -> dict[str, Any]:
        """The JWT's claims, or GitHub's 401 for a missing, malformed, foreign or long-lived one."""
        if credential is None or not _looks_like_jwt(credential):
            raise error(401, "A JSON web token could not be decoded")
        try:
            header = jwt.get_unverified_header(credential)
            claims = jwt.decode(credential, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise error(401, "A JSON web token could not be decoded") from None
        if header.get("alg") != "RS256":
            raise error(401, "A JSON web token could not be decoded")
        if str(claims.get("iss")) != str(self.app_id):
            raise error(401, "Integration not found")  # GitHub looks the App up by `iss`
        try:
            jwt.decode(credential, self.public_key_pem, algorithms=["RS256"],
                       options={"require": ["iat", "exp", "iss"], "verify_iat": True}, leeway=CLOCK_DRIFT_S)
        except jwt.ExpiredSignatureError:
            raise error(401, "'Expiration time' claim ('exp') must be a numeric value representing the future "
                             "time at which the assertion expires") from None
        except (jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            raise error(401, "'Issued at' claim ('iat') must be an Integer representing the time that the "
                             "assertion was issued") from None
        except jwt.InvalidTokenError:
            raise error(401, "A JSON web token could not be decoded") from None
        now = time.time()
        if claims["exp"] - now > MAX_JWT_AHEAD_S + CLOCK_DRIFT_S or \
                claims["exp"] - claims["iat"] > MAX_JWT_AHEAD_S + BACKDATE_S:
            raise error(401, "'Expiration time' claim ('exp') is too far in the future")
        return dict(claims)

    # --- endpoints --------------------------------------------------------------------------------
    def issue_token(self, installation_id: int) -> dict[str, Any]:
        """`POST /app/installations/{id}/access_tokens` (the JWT already checked)."""
        if installation_id not in self.installations:
            raise not_found()
        now = time.time()
        token = "ghs_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))
        issued = IssuedToken(token, installation_id, now, now + self.token_ttl_s)
        self.issued.append(issued)
        self._by_token[token] = issued
        return {"token": token, "expires_at": _iso(issued.expires_at), "permissions": dict(PERMISSIONS),
                "repository_selection": "selected"}

    def expire_tokens(self) -> None:
        """Every token issued so far stops working now (as if revoked)."""
        now = time.time()
        for issued in self.issued:
            issued.expires_at = min(issued.expires_at, now)

    def app_json(self, base: str) -> dict[str, Any]:
        """`GET /app`."""
        owner = next(iter(self._accounts.values()), "acme")
        return {
            "id": self.app_id, "slug": self.slug, "node_id": f"A_{self.app_id}", "client_id": f"Iv1.{self.app_id:016x}",
            "owner": account_json(base, owner), "name": self.slug.replace("-", " ").title(),
            "description": "Reviews pull requests", "external_url": base, "html_url": f"{base}/apps/{self.slug}",
            "created_at": self.created_at, "updated_at": self.created_at, "permissions": dict(PERMISSIONS),
            "events": list(EVENTS), "installations_count": len(self.installations),
        }

    def installation_json(self, base: str, installation_id: int) -> dict[str, Any]:
        """`GET /app/installations/{id}` and `GET /repos/{o}/{r}/installation`."""
        if installation_id not in self.installations:
            raise not_found()
        account = account_json(base, self._accounts[installation_id])
        return {
            "id": installation_id, "account": account, "repository_selection": "selected",
            "access_tokens_url": f"{base}/app/installations/{installation_id}/access_tokens",
            "repositories_url": f"{base}/installation/repositories",
            "html_url": f"{base}/organizations/{account['login']}/settings/installations/{installation_id}",
            "app_id": self.app_id, "app_slug": self.slug, "target_id": account["id"],
            "target_type": "Organization", "permissions": dict(PERMISSIONS), "events": list(EVENTS),
            "created_at": self.created_at, "updated_at": self.created_at, "single_file_name": None,
            "has_multiple_single_files": False, "single_file_paths": [], "suspended_by": None,
            "suspended_at": None,
        }

    def repository_installation_json(self, base: str, owner: str, repo: str) -> dict[str, Any]:
        installation_id = self.installation_of(owner, repo)
        if installation_id is None:
            raise not_found()
        return self.installation_json(base, installation_id)
