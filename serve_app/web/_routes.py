"""Routes serving the page and its static files, read once from the package, with security headers."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # review ids in the page URL stay off GitHub's logs
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
ASSETS_PREFIX = "/assets"
INDEX = "index.html"

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class StaticFile:
    name: str
    body: bytes
    media_type: str

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


def load_static() -> dict[str, StaticFile]:
    """Every servable file of `static/` by name; other suffixes are not served."""
    folder = resources.files(__package__).joinpath("static")
    found: dict[str, StaticFile] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in MEDIA_TYPES:
            found[entry.name] = StaticFile(entry.name, entry.read_bytes(), MEDIA_TYPES[suffix])
    if INDEX not in found:
        raise FileNotFoundError(f"{INDEX} is missing from the {__package__} package")
    return found


def _endpoint(file: StaticFile) -> Endpoint:
    etag = file.etag

    async def serve_file(request: Request) -> Response:
        # no-cache: the browser revalidates (a cheap 304), so an upgraded service is seen at once.
        headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(file.body, media_type=file.media_type, headers=headers)

    return serve_file


def web_routes() -> list[Route]:
    """`/` (the page) and `/assets/<name>` for the other static files (GET and HEAD)."""
    files = load_static()
    routes = [Route("/", _endpoint(files[INDEX]), methods=["GET"], name="web_index")]
    routes += [Route(f"{ASSETS_PREFIX}/{name}", _endpoint(file), methods=["GET"], name=f"web_{name}")
               for name, file in sorted(files.items()) if name != INDEX]
    return routes
