"""The page's routes and files, without a browser: headers, types, and no markup built from data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from serve_app.web import CONTENT_SECURITY_POLICY, web_routes

STATIC = Path(__file__).resolve().parents[2] / "serve_app" / "web" / "static"
EXPECTED_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(Starlette(routes=web_routes()))


def test_the_page_carries_a_strict_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == EXPECTED_CSP == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="assets/app.js"></script>' in response.text


@pytest.mark.parametrize(("name", "media_type"), [
    ("app.js", "text/javascript; charset=utf-8"), ("review.js", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8")])
def test_assets_are_served_with_their_types(client: TestClient, name: str, media_type: str) -> None:
    response = client.get(f"/assets/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (STATIC / name).read_bytes()
    revalidated = client.get(f"/assets/{name}", headers={"If-None-Match": response.headers["etag"]})
    assert revalidated.status_code == 304 and revalidated.content == b""


def test_every_module_the_page_imports_is_served(client: TestClient) -> None:
    for script in STATIC.glob("*.js"):
        for imported in re.findall(r'from "\./([\w.-]+)"', script.read_text()):
            assert client.get(f"/assets/{imported}").status_code == 200, f"{script.name} imports {imported}"


def test_only_known_files_are_served(client: TestClient) -> None:
    assert client.get("/assets/index.html").status_code == 404
    assert client.get("/assets/../_routes.py").status_code == 404
    assert client.get("/assets/__init__.py").status_code == 404


def test_no_inline_script_or_style_in_the_page() -> None:
    html = (STATIC / "index.html").read_text()
    assert all('src="' in tag for tag in re.findall(r"<script\b[^>]*>", html))
    assert not re.search(r"<style\b|\sstyle=|\son\w+=", html)


@pytest.mark.parametrize("script", sorted(p.name for p in STATIC.glob("*.js")))
def test_scripts_never_parse_data_as_markup(script: str) -> None:
    source = (STATIC / script).read_text()
    markup_sinks = r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
    assert not re.search(markup_sinks, source)
