"""Who may call the fake GitHub: one accepted token, as a repository's personal access token."""

from __future__ import annotations

from starlette.requests import Request

from prreview.demo._github_http import error


def check_token(request: Request, token: str | None) -> None:
    """Raise GitHub's 401 for a request carrying a token other than `token`, or a write carrying
    none. With `token` None any caller is accepted."""
    if token is None:
        return
    auth = request.headers.get("authorization")
    if auth is not None and auth not in (f"token {token}", f"Bearer {token}"):
        raise error(401, "Bad credentials")
    if auth is None and request.method != "GET":
        raise error(401, "Requires authentication")
