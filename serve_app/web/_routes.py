"""Routes serving the page and its static files from the package, with security headers."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # review ids in the page URL stay off GitHub's logs
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    # The browser revalidates (a cheap 304 on the ETag), so an upgraded service is seen at once.
    "Cache-Control": "no-cache",
}
# Set here rather than guessed from the host's mimetypes table, which differs between systems.
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
ASSETS_PREFIX = "/assets"
INDEX = "index.html"
STATIC = (__package__, "static")


class PageFiles(StaticFiles):
    """Starlette's StaticFiles over `static/`, limited to `names`, every answer with the page's
    security headers and an explicit media type. Other names (and paths that climb out) are 404."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__(packages=[STATIC])
        self.names = frozenset(names)

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if path not in self.names:
            return "", None
        return super().lookup_path(path)

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        if response.status_code != 304:
            response.headers["Content-Type"] = MEDIA_TYPES[os.path.splitext(str(full_path))[1]]
        return response


def servable_names() -> list[str]:
    """The files of `static/` that are served: those with a known media type."""
    folder = resources.files(__package__).joinpath("static")
    names = sorted(entry.name for entry in folder.iterdir()
                   if entry.is_file() and os.path.splitext(entry.name)[1] in MEDIA_TYPES)
    if INDEX not in names:
        raise FileNotFoundError(f"{INDEX} is missing from the {__package__} package")
    return names


def host_name(header: str) -> str:
    """The host of a `Host` header, without its port (`[::1]:8000` -> `[::1]`)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def web_routes(allowed_hosts: Collection[str] = ("*",)) -> list[Route]:
    """`/` (the page) and `/assets/<name>` for the other static files (GET and HEAD), answered
    only for the `allowed_hosts` names: a page on another site that points its own domain name
    at 127.0.0.1 (DNS rebinding) gets a 403, not the page."""
    page = PageFiles([INDEX])
    assets = PageFiles(name for name in servable_names() if name != INDEX)
    hosts = {h.strip().lower() for h in allowed_hosts if h.strip()}

    def refused(request: Request) -> Response | None:
        if "*" in hosts or host_name(request.headers.get("host", "")) in hosts:
            return None
        return JSONResponse({"error": {"code": "forbidden_host", "message": "This page is not served under "
                                       "that host name (PR_REVIEW_ALLOWED_HOSTS)."}}, status_code=403)

    async def index(request: Request) -> Response:
        return refused(request) or await page.get_response(INDEX, request.scope)

    async def asset(request: Request) -> Response:
        return refused(request) or await assets.get_response(request.path_params["name"], request.scope)

    return [Route("/", index, methods=["GET"], name="web_index"),
            Route(ASSETS_PREFIX + "/{name}", asset, methods=["GET"], name="web_assets")]
