"""Who may call the API: API keys, their rights and quotas.

A key is `prk_<id>_<secret>`. Only the SHA-256 of the secret is stored (with the public id to find
it); a key is 256 random bits, so a fast hash is enough, as for GitHub's own tokens, and it keeps
the check per request cheap. Secrets are compared in constant time (`hmac.compare_digest`).
Operator keys come from `PR_REVIEW_API_KEYS` (`name:secret,...`, from a Kubernetes Secret) and
may do everything; keys made with `pr-review keys create` live in the database, can be limited,
and are revoked there (every ingress replica is told at once).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from prreview.config import Settings
from prreview.errors import PRReviewError
from prreview.lifecycle import Quota
from prreview.store import Statements

KEY_PREFIX = "prk_"
LOCAL_KEY_NAME = "local"
KEY_FILE = "api-key"
# A key found in the database is trusted this long without asking again (a revocation is pushed
# to every replica at once; this bounds it if that notice is lost).
CACHE_S = 30.0


class Right(StrEnum):
    READ = "read"  # its own reviews and batches
    SUBMIT = "submit"  # new reviews and batches, and cancelling its own
    PUBLISH = "publish"  # reviews with `post: true` (written to the PR on GitHub)
    ADMIN = "admin"  # everything: every submitter's reviews, the cluster summary


ALL_RIGHTS = frozenset(Right)


class Unauthorized(PRReviewError):
    code = "unauthorized"
    http_status = 401


class Forbidden(PRReviewError):
    code = "forbidden"
    http_status = 403


class QuotaExceeded(PRReviewError):
    code = "quota_exceeded"
    http_status = 429


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    name: str
    rights: frozenset[Right]
    quota: Quota = field(default_factory=Quota)

    @property
    def submitter(self) -> str:
        """What jobs record as their submitter (and scope their idempotency key to)."""
        return f"key:{self.name}"

    def can(self, right: Right) -> bool:
        return right in self.rights or Right.ADMIN in self.rights

    def require(self, right: Right) -> None:
        if not self.can(right):
            raise Forbidden(f"The key {self.name!r} may not {_VERBS[right]}.")

    def owns(self, submitted_by: str) -> bool:
        return Right.ADMIN in self.rights or submitted_by == self.submitter


_VERBS = {Right.READ: "read reviews", Right.SUBMIT: "submit or cancel reviews",
          Right.PUBLISH: "publish reviews to GitHub (options.post)", Right.ADMIN: "do this (admin only)"}


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class NewKey:
    id: str
    secret: str

    @property
    def token(self) -> str:
        """The whole key, shown once to whoever made it."""
        return f"{KEY_PREFIX}{self.id}_{self.secret}"


def new_key() -> NewKey:
    return NewKey(secrets.token_hex(6), secrets.token_urlsafe(32))


def split_key(token: str) -> tuple[str, str] | None:
    """(id, secret) of a `prk_` key; None for anything else (an operator key, garbage)."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = token[len(KEY_PREFIX):].partition("_")
    return (key_id, secret) if sep and key_id and secret else None


def operator_keys(settings: Settings) -> dict[str, bytes]:
    """`PR_REVIEW_API_KEYS` as {name: digest of the secret}."""
    raw = settings.api_keys.get_secret_value() if settings.api_keys else ""
    keys: dict[str, bytes] = {}
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, secret = entry.partition(":")
        if not sep or not name or not secret:
            raise ValueError("PR_REVIEW_API_KEYS must be comma-separated name:secret pairs")
        keys[name] = secret_digest(secret)
    return keys


class Keyring:
    """Authenticates bearer keys: operator keys from the settings, made keys from the database
    (cached for `CACHE_S`, forgotten at once when `forget()` is told of a revocation)."""

    def __init__(self, settings: Settings, sql: Statements) -> None:
        self._operators = operator_keys(settings)
        self._sql = sql
        self._cache: dict[str, tuple[float, bytes, Principal]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("This API needs a key: send `Authorization: Bearer <key>` "
                               "(`pr-review keys create NAME` makes one).")
        token = token.strip()
        principal = await self._made_key(token) if split_key(token) else self._operator_key(token)
        if principal is None:
            raise Unauthorized("The API key is unknown or revoked.")
        return principal

    def _operator_key(self, token: str) -> Principal | None:
        digest = secret_digest(token)
        found = None
        for name, expected in self._operators.items():  # every entry compared: constant time in the key
            if hmac.compare_digest(digest, expected):
                found = name
        return Principal(found, ALL_RIGHTS) if found else None

    async def _made_key(self, token: str) -> Principal | None:
        parts = split_key(token)
        assert parts is not None
        key_id, secret = parts
        cached = self._cache.get(key_id)
        if cached is None or time.monotonic() - cached[0] > CACHE_S:
            row = await self._sql.one("get_api_key", id=key_id)
            if row is None:
                self._cache.pop(key_id, None)
                return None
            cached = (time.monotonic(), bytes(row["secret_sha256"]), principal_of(row))
            self._cache[key_id] = cached
        return cached[2] if hmac.compare_digest(secret_digest(secret), cached[1]) else None

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    def forget_all(self) -> None:
        self._cache.clear()


def principal_of(row: dict[str, Any]) -> Principal:
    return Principal(str(row["name"]), frozenset(Right(r) for r in row["rights"]),
                     Quota(row["max_active"], row["max_per_hour"]))


# --- making and revoking keys (the CLI, and `pr-review serve`'s local key) -------------------------
async def create_key(sql: Statements, name: str, rights: frozenset[Right], quota: Quota | None = None) -> str:
    """A new key named `name`; returns the whole key (shown once, never stored)."""
    key, quota = new_key(), quota or Quota()
    row = await sql.one("create_api_key", id=key.id, name=name, secret_sha256=secret_digest(key.secret),
                        rights=sorted(r.value for r in rights), max_active=quota.max_active,
                        max_per_hour=quota.max_per_hour)
    if row is None:
        raise ValueError(f"a key named {name!r} exists already; revoke it first")
    return key.token


async def revoke_key(sql: Statements, name: str) -> bool:
    return await sql.one("revoke_api_key", name=name) is not None


def local_key_path(settings: Settings) -> Path:
    """The local key file: the key and a newline, mode 0600, written by `pr-review serve` when no
    operator key is configured, read by the CLI and `pr-review demo` on the same machine."""
    return settings.home / KEY_FILE


def write_local_key(settings: Settings, key: str) -> Path:
    """Store `key` as the local key file, readable by its owner only (created 0600, never wider)."""
    path = local_key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(key + "\n")
        os.chmod(temporary, stat.S_IRUSR | stat.S_IWUSR)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


async def ensure_local_key(settings: Settings, sql: Statements) -> Path:
    """`pr-review serve` with no operator key configured: an admin key named `local`, kept in
    PR_REVIEW_HOME where the CLI and `pr-review demo` find it. Reused while it stays valid."""
    path = local_key_path(settings)
    if path.exists():
        keyring = Keyring(settings.model_copy(update={"api_keys": None}), sql)
        try:
            await keyring.authenticate(f"Bearer {path.read_text().strip()}")
            return path
        except Unauthorized:
            pass
    await revoke_key(sql, LOCAL_KEY_NAME)
    return write_local_key(settings, await create_key(sql, LOCAL_KEY_NAME, ALL_RIGHTS))
