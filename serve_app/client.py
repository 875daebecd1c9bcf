"""HTTP client of the pr-review API, used by the CLI's client commands, and the key it sends."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
from httpx_sse import connect_sse

from prreview.access import local_key_path
from prreview.config import Settings
from prreview.models import TERMINAL_STATUSES

JobList = list[dict[str, Any]]  # named outside the class, whose `list` method shadows the builtin

KEY_ENV = "PR_REVIEW_API_KEY"


def client_api_key(settings: Settings) -> str | None:
    """The key the client commands send: PR_REVIEW_API_KEY, else the local key file, else none."""
    if settings.api_key is not None and settings.api_key.get_secret_value().strip():
        return settings.api_key.get_secret_value().strip()
    try:
        key = local_key_path(settings).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return key or None


def api_key_source(settings: Settings) -> str | None:
    """Where client_api_key() found the key, for messages (never the key itself)."""
    if settings.api_key is not None and settings.api_key.get_secret_value().strip():
        return KEY_ENV
    return str(local_key_path(settings)) if client_api_key(settings) else None


def unreachable(exc: Exception, settings: Settings) -> str:
    """The one line for an API that does not answer, with where to look."""
    return (f"cannot reach the pr-review API at {settings.api_url}: {exc or type(exc).__name__} (is `pr-review "
            f"serve` running? PR_REVIEW_API_URL says where the API is)")


def auth_hint(status: int, settings: Settings) -> str:
    """What to do about a 401 or 403, in one sentence that names where the key came from."""
    source = api_key_source(settings)
    make = "`pr-review keys create NAME` makes one"
    if status == 403:
        return (f"The key{f' from {source}' if source else ''} may not do this; use a key with more rights "
                f"({make}) in {KEY_ENV}.")
    if source is None:
        return (f"The API needs a key: set {KEY_ENV} ({make}), or run this where `pr-review serve` "
                f"keeps its key ({local_key_path(settings)}).")
    return f"The API refused the key from {source}: set {KEY_ENV} to a valid key ({make})."


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code, self.message = status, code, message


class Client:
    def __init__(self, base_url: str, timeout_s: float = 30.0, *, api_key: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers, transport=transport)

    @classmethod
    def from_settings(cls, settings: Settings, timeout_s: float = 30.0) -> Client:
        """A client of PR_REVIEW_API_URL that sends the key client_api_key() finds."""
        return cls(settings.api_url, timeout_s, api_key=client_api_key(settings))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise APIError(response.status_code, error["code"], error["message"])
            except (ValueError, KeyError, TypeError):
                raise APIError(response.status_code, "http_error", response.text[:200]) from None
        return response.json()

    def submit(self, pr_url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._json(self._http.post("/v1/reviews", json={"pr_url": pr_url, "options": options or {}}))

    def get(self, review_id: str) -> dict[str, Any]:
        return self._json(self._http.get(f"/v1/reviews/{review_id}"))

    def cancel(self, review_id: str) -> dict[str, Any]:
        return self._json(self._http.delete(f"/v1/reviews/{review_id}"))

    def list(self, status: str | None = None, limit: int = 20) -> JobList:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return self._json(self._http.get("/v1/reviews", params=params))["items"]

    def submit_batch(self, pr_urls: Sequence[str], options: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._json(self._http.post("/v1/batches", json={"pr_urls": pr_urls, "options": options or {}}))

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self._json(self._http.get(f"/v1/batches/{batch_id}"))

    def cluster(self) -> dict[str, Any]:
        """Queue depth, replicas per deployment and recent failures (`GET /v1/cluster`)."""
        return self._json(self._http.get("/v1/cluster"))

    def ready(self) -> dict[str, Any]:
        return self._json(self._http.get("/readyz"))

    def events(self, review_id: str, last_event_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Progress events until the terminal one; reconnects from the last id if the stream drops."""
        last = last_event_id
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with connect_sse(self._http, "GET", f"/v1/reviews/{review_id}/events", headers=headers,
                                 timeout=httpx.Timeout(30, read=60)) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        self._json(source.response)
                    for sse in source.iter_sse():
                        if not sse.data:
                            continue
                        last = sse.id or last
                        event = json.loads(sse.data)
                        yield event
                        if event.get("kind") in TERMINAL_STATUSES:
                            return
            except (httpx.ReadTimeout, httpx.RemoteProtocolError):
                continue
            if self.get(review_id)["status"] in TERMINAL_STATUSES:
                return
