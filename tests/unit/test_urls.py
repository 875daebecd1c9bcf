from __future__ import annotations

import pytest

from prreview.config import Settings
from prreview.errors import ForeignHost, InvalidPRURL
from prreview.urls import PRRef, parse_pr_url


@pytest.mark.parametrize(("api_url", "web_host"), [
    ("https://api.github.com", "github.com"),
    ("https://ghe.example/api/v3", "ghe.example"),
    ("http://127.0.0.1:9999", "127.0.0.1:9999"),
])
def test_web_host_follows_the_api_url(api_url: str, web_host: str) -> None:
    assert Settings(github_api_url=api_url).github_web_host == web_host


@pytest.mark.parametrize("url", [
    "https://github.com/acme/shop/pull/7",
    "https://github.com/acme/shop/pull/7/",
    "https://github.com/acme/shop/pull/7/files",
    "https://github.com/acme/shop/pull/7#discussion_r1",
    "  https://GitHub.com/acme/shop/pull/7  ",
])
def test_pr_urls_on_the_configured_host_parse(url: str) -> None:
    assert parse_pr_url(url, web_host="github.com") == PRRef("acme", "shop", 7)


@pytest.mark.parametrize(("url", "error"), [
    ("", InvalidPRURL),
    ("github.com/acme/shop/pull/7", InvalidPRURL),
    ("ftp://github.com/acme/shop/pull/7", InvalidPRURL),
    ("https://github.com/acme/shop/issues/7", InvalidPRURL),
    ("https://github.com/acme/shop/pull/0", InvalidPRURL),
    ("https://github.com/acme/pull/7", InvalidPRURL),
    ("https://token@github.com/acme/shop/pull/7", InvalidPRURL),
    ("https://github.com:99999/acme/shop/pull/7", InvalidPRURL),
    ("https://evil.example/acme/shop/pull/7", ForeignHost),
    ("https://github.com.evil.example/acme/shop/pull/7", ForeignHost),
    ("http://169.254.169.254/latest/pull/1", ForeignHost),
])
def test_anything_else_is_refused_before_any_fetch(url: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_pr_url(url, web_host="github.com")
