"""GitHub's HTTP conventions for the local GitHub: error bodies, pagination, the server's root URL."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

DOCS_URL = "https://docs.github.com/rest"
API_VERSION = "2022-11-28"


class PRNotFound(KeyError):
    """No such repository or pull request (answered 404)."""


class Reply(Exception):
    """Raised by a handler to answer with an error right away."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def error(status: int, message: str, errors: list[Any] | None = None) -> Reply:
    """GitHub's error body: `message`, `documentation_url`, `status`, and `errors` for a 422."""
    body: dict[str, Any] = {"message": message, "documentation_url": DOCS_URL, "status": str(status)}
    if errors is not None:
        body["errors"] = errors
    return Reply(JSONResponse(body, status_code=status))


def not_found() -> Reply:
    return error(404, "Not Found")


def unprocessable(*errors: str) -> Reply:
    return error(422, "Unprocessable Entity", list(errors))


def base_url(request: Request) -> str:
    """The server's root URL as the client reached it (API root and web root alike)."""
    return str(request.base_url).rstrip("/")


def int_param(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        return default


def paginate(request: Request, items: Sequence[Any]) -> JSONResponse:
    """One page of `items` with GitHub's `Link` header (per_page default 30, at most 100)."""
    per_page = min(100, max(1, int_param(request, "per_page", 30)))
    page = max(1, int_param(request, "page", 1))
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
