"""The key the CLI's client commands send: PR_REVIEW_API_KEY, else the local key file, else none;
sent as a Bearer header on every call, the event stream included."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from prreview.access import local_key_path, write_local_key
from prreview.config import load_settings
from serve_app.client import APIError, Client, api_key_source, auth_hint, client_api_key


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PR_REVIEW_HOME", str(tmp_path))
    monkeypatch.delenv("PR_REVIEW_API_KEY", raising=False)
    return tmp_path


def test_no_key_anywhere(home: Path) -> None:
    settings = load_settings()
    assert client_api_key(settings) is None and api_key_source(settings) is None
    assert local_key_path(settings) == home / "api-key"


def test_the_local_key_file_is_read_and_written_owner_only(home: Path) -> None:
    settings = load_settings()
    path = write_local_key(settings, "prk_local")
    assert path == home / "api-key"
    assert path.read_text() == "prk_local\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert client_api_key(settings) == "prk_local"
    assert api_key_source(settings) == str(path)
    assert [p.name for p in home.iterdir()] == ["api-key"]  # no temporary file left behind


def test_the_environment_wins_over_the_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "api-key").write_text("prk_local\n")
    monkeypatch.setenv("PR_REVIEW_API_KEY", " prk_env ")
    settings = load_settings()
    assert client_api_key(settings) == "prk_env"
    assert api_key_source(settings) == "PR_REVIEW_API_KEY"
    assert "prk_env" not in repr(settings)  # a SecretStr


@pytest.mark.parametrize("content", ["", "\n", "   \n"])
def test_an_empty_key_file_is_no_key(home: Path, content: str) -> None:
    (home / "api-key").write_text(content)
    assert client_api_key(load_settings()) is None


def test_the_hint_names_where_the_key_came_from(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert str(home / "api-key") in auth_hint(401, settings)
    write_local_key(settings, "prk_local")
    assert auth_hint(401, settings) == (f"The API refused the key from {home / 'api-key'}: set PR_REVIEW_API_KEY "
                                        "to a valid key (`pr-review keys create NAME` makes one).")
    monkeypatch.setenv("PR_REVIEW_API_KEY", "prk_env")
    assert auth_hint(403, load_settings()).startswith("The key from PR_REVIEW_API_KEY may not do this;")


def test_every_call_and_the_event_stream_carry_the_key() -> None:
    seen: list[tuple[str, str | None, str | None]] = []
    events = [{"kind": "queued"}, {"kind": "succeeded"}]

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("authorization"), request.headers.get("last-event-id")))
        if request.url.path.endswith("/events"):
            body = "".join(f"id: {i}\nevent: {e['kind']}\ndata: {json.dumps(e)}\n\n" for i, e in enumerate(events, 1))
            return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"id": "r-1", "status": "succeeded"})

    with Client("http://api.test", api_key="prk_1", transport=httpx.MockTransport(answer)) as api:
        api.get("r-1")
        assert [e["kind"] for e in api.events("r-1")] == ["queued", "succeeded"]
        api.cancel("r-1")
    assert [(path, auth) for path, auth, _ in seen] == [
        ("/v1/reviews/r-1", "Bearer prk_1"), ("/v1/reviews/r-1/events", "Bearer prk_1"),
        ("/v1/reviews/r-1", "Bearer prk_1")]


def test_no_key_no_header() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "A key is needed."}},
                              headers={"WWW-Authenticate": "Bearer"})

    with Client("http://api.test", transport=httpx.MockTransport(answer)) as api, pytest.raises(APIError) as caught:
        api.get("r-1")
    assert seen == [None]
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
