"""PR URLs: parsed strictly, and accepted only on the configured GitHub's web host (no SSRF)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from prreview.errors import ForeignHost, InvalidPRURL

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,99})"
_PATH = re.compile(rf"^/({_NAME})/({_NAME})/pulls?/(\d{{1,9}})(?:/(?:files|commits|checks)?)?/?$")


@dataclass(frozen=True)
class PRRef:
    owner: str
    repo: str
    number: int

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"


def parse_pr_url(url: str, *, web_host: str) -> PRRef:
    """`https://github.com/o/r/pull/7` -> PRRef('o', 'r', 7), if its host is `web_host`.

    Raises InvalidPRURL for anything that is not a PR URL and ForeignHost for another host,
    before anything is fetched.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidPRURL("pr_url must be a non-empty string.")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidPRURL(f"{url!r} is not a valid URL.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidPRURL(f"{url!r} is not an http(s) URL of a pull request.")
    if parts.username or parts.password:
        raise InvalidPRURL("PR URLs must not carry credentials.")
    host = f"{parts.hostname}:{port}" if port else parts.hostname
    if host.lower() != web_host.lower():
        raise ForeignHost(f"Only pull requests on {web_host} can be reviewed here, not on {host}.")
    match = _PATH.match(parts.path)
    if not match:  # a query or fragment (#discussion_r1) is harmless and ignored
        raise InvalidPRURL(f"{url!r} is not a pull request URL (expected {web_host}/OWNER/REPO/pull/NUMBER).")
    number = int(match.group(3))
    if number < 1:
        raise InvalidPRURL("The pull request number must be positive.")
    return PRRef(match.group(1), match.group(2), number)


def canonical_pr_url(ref: PRRef, *, web_host: str, scheme: str = "https") -> str:
    return f"{scheme}://{web_host}/{ref.owner}/{ref.repo}/pull/{ref.number}"
