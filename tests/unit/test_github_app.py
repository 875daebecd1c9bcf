"""pr-review as a GitHub App, against the fake GitHub (no Ray): installation tokens fetched with a
valid JWT and cached until shortly before they expire, refused credentials, no token in any log or
repr, views that act for one installation, the App's bot as "us", and the settings behind it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr, ValidationError

from graph.github import GitHubClient
from graph.github_app import GitHubApp, GitHubAppNotInstalled
from prreview.config import AppKeyMissing, Settings
from prreview.demo import FakeFile
from prreview.errors import GitHubError, PRNotFound
from prreview.urls import PRRef
from tests.fakes import FakeGitHub

pytestmark = pytest.mark.timeout(60)
APP_ID = 4242
SHOP, OTHER = 12345, 777
SHOP_PR, OTHER_PR = PRRef("acme", "shop", 7), PRRef("acme", "other", 3)


def _pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return _pem_pair()


@pytest.fixture
def github(keys: tuple[str, str]) -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        fake.add_pr("acme", "shop", 7, [FakeFile("a.py", base="x = 0\n", head="x = 1\n")])
        fake.add_pr("acme", "other", 3, [FakeFile("b.py", head="y = 2\n")])
        fake.add_pr("acme", "private", 1, [FakeFile("c.py", head="z = 3\n")])  # the App is not installed there
        fake.install_app(APP_ID, keys[1], installations={SHOP: [("acme", "shop")], OTHER: [("acme", "other")]})
        yield fake


class Clock:
    """The wall clock the App compares token expiry with; tests move it forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(github: FakeGitHub, keys: tuple[str, str], clock: Clock) -> AsyncIterator[GitHubClient]:
    app = GitHubApp(github.url, APP_ID, SecretStr(keys[0]), clock=clock)
    client = GitHubClient(github.url, None, app=app, rate_limit_max_wait_s=0)
    yield client
    await client.aclose()


def _authorizations(github: FakeGitHub, fragment: str) -> list[str | None]:
    return [r.authorization for r in github.requests if fragment in r.path]


# --- tokens: fetched with a valid JWT, cached, renewed shortly before expiry ------------------------
async def test_one_token_serves_many_requests(github: FakeGitHub, client: GitHubClient,
                                              keys: tuple[str, str]) -> None:
    shop = client.for_installation(SHOP)
    for _ in range(5):
        assert await shop.head_sha(SHOP_PR) == github.head_sha("acme", "shop", 7)
    await shop.pull_request(SHOP_PR)
    issued = github.issued_app_tokens()
    assert [t.installation_id for t in issued] == [SHOP]
    assert set(_authorizations(github, "/repos/acme/shop/pulls")) == {f"Bearer {issued[0].token}"}
    # The JWT it was fetched with: RS256 with the App's key, issued by the App, short-lived.
    (grant,) = [r for r in github.requests if r.path.endswith("/access_tokens")]
    assert grant.authorization is not None
    credential = grant.authorization.removeprefix("Bearer ")
    assert jwt.get_unverified_header(credential)["alg"] == "RS256"
    claims = jwt.decode(credential, keys[1], algorithms=["RS256"])
    assert claims["iss"] == str(APP_ID) and claims["exp"] - claims["iat"] <= 660 and claims["exp"] > time.time()


async def test_concurrent_first_requests_fetch_one_token(github: FakeGitHub, client: GitHubClient) -> None:
    shop = client.for_installation(SHOP)
    await asyncio.gather(*(shop.head_sha(SHOP_PR) for _ in range(10)))
    assert len(github.issued_app_tokens()) == 1


async def test_a_token_is_renewed_shortly_before_it_expires(github: FakeGitHub, client: GitHubClient,
                                                            clock: Clock) -> None:
    shop = client.for_installation(SHOP)
    await shop.head_sha(SHOP_PR)
    (first,) = github.issued_app_tokens()
    clock.offset = (first.expires_at - 301) - time.time()  # 5 min + 1 s before it expires: still good
    await shop.head_sha(SHOP_PR)
    assert len(github.issued_app_tokens()) == 1
    clock.offset = (first.expires_at - 299) - time.time()  # within 5 minutes of expiry: a new one
    await shop.head_sha(SHOP_PR)
    clock.offset = 0  # back to now: the new token, an hour long, is used from the cache
    await shop.head_sha(SHOP_PR)
    issued = github.issued_app_tokens()
    assert len(issued) == 2
    assert _authorizations(github, "/pulls/7")[-1] == f"Bearer {issued[1].token}"


async def test_a_refused_token_is_replaced_once(github: FakeGitHub, client: GitHubClient) -> None:
    shop = client.for_installation(SHOP)
    await shop.head_sha(SHOP_PR)
    github.expire_app_tokens()  # revoked before its time
    await shop.create_issue_comment(SHOP_PR, "hello")  # a write: refused with 401, so never done twice
    assert len(github.issued_app_tokens()) == 2
    assert [r.status for r in github.requests if r.method == "POST" and "/issues/7/comments" in r.path] == [401, 201]
    assert [c["body"] for c in github.issue_comments("acme", "shop", 7)] == ["hello"]


@pytest.mark.parametrize("wrong", ["key", "app id"])
async def test_wrong_credentials_are_refused(github: FakeGitHub, keys: tuple[str, str], wrong: str) -> None:
    key, app_id = (_pem_pair()[0], APP_ID) if wrong == "key" else (keys[0], APP_ID + 1)
    app = GitHubApp(github.url, app_id, key, attempts=1)
    try:
        with pytest.raises(GitHubError, match="401") as failure:
            await app.installation_token(SHOP)
        assert "PRIVATE KEY" not in str(failure.value)
        with pytest.raises(GitHubError, match="401"):
            await app.app_login()
    finally:
        app.close()
    assert github.issued_app_tokens() == []


def test_a_malformed_key_fails_at_construction_without_showing_it() -> None:
    with pytest.raises(ValueError, match="PEM") as failure:
        GitHubApp("https://api.github.com", APP_ID, "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n")
    assert "not a key" not in str(failure.value)
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match="RSA"):
        GitHubApp("https://api.github.com", APP_ID, ec_key)


async def test_tokens_and_the_key_are_in_no_log_and_no_repr(github: FakeGitHub, client: GitHubClient,
                                                            keys: tuple[str, str],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # PyGithub's debug lines included
    for name in ("github", "github.Requester", "urllib3", "httpx", "httpcore", "graph"):
        caplog.set_level(logging.DEBUG, logger=name)
    shop = client.for_installation(SHOP)
    await shop.head_sha(SHOP_PR)
    await client.head_sha(OTHER_PR)
    await client.authenticated_login()
    github.expire_app_tokens()
    await shop.head_sha(SHOP_PR)
    tokens = [t.token for t in github.issued_app_tokens()]
    assert len(tokens) == 3
    assert any("access_tokens" in r.getMessage() for r in caplog.records)  # the requests were logged...
    key_body = keys[0].splitlines()[1]
    assert client.app is not None
    shown = [caplog.text, repr(client), repr(shop), repr(client.app), str(vars(client.app))]
    for text in shown:  # ...but no token and no key
        assert not any(token in text for token in tokens)
        assert key_body not in text


# --- acting for an installation ---------------------------------------------------------------------
async def test_a_view_reaches_only_its_installations_repositories(github: FakeGitHub, client: GitHubClient) -> None:
    shop, other = client.for_installation(SHOP), client.for_installation(OTHER)
    assert (shop.installation, other.installation, client.installation) == (SHOP, OTHER, None)
    assert await shop.head_sha(SHOP_PR) == github.head_sha("acme", "shop", 7)
    with pytest.raises(PRNotFound):
        await shop.head_sha(OTHER_PR)  # GitHub answers 404 to another installation's token
    assert await other.head_sha(OTHER_PR) == github.head_sha("acme", "other", 3)
    by_installation = {t.installation_id: f"Bearer {t.token}" for t in github.issued_app_tokens()}
    assert set(_authorizations(github, "/repos/acme/other/pulls")) == {by_installation[SHOP], by_installation[OTHER]}
    assert not any("/installation" in r.path and "/app/" not in r.path for r in github.requests)  # no look-up


async def test_a_view_shares_the_connection_pool_and_closing_it_closes_nothing(client: GitHubClient,
                                                                               github: FakeGitHub) -> None:
    shop = client.for_installation(SHOP)
    await shop.aclose()
    assert await client.for_installation(SHOP).head_sha(SHOP_PR) == github.head_sha("acme", "shop", 7)
    assert client.for_installation(None) is client


async def test_the_client_itself_finds_each_repositorys_installation(github: FakeGitHub,
                                                                      client: GitHubClient) -> None:
    assert await client.installation_id("acme", "shop") == SHOP
    assert await client.installation_id("Acme", "Shop") == SHOP  # GitHub's names are case-insensitive
    assert await client.head_sha(SHOP_PR) == github.head_sha("acme", "shop", 7)
    assert await client.head_sha(OTHER_PR) == github.head_sha("acme", "other", 3)
    assert len([r for r in github.requests if r.path == "/repos/acme/shop/installation"]) == 1  # remembered
    with pytest.raises(GitHubAppNotInstalled):
        await client.installation_id("acme", "private")
    with pytest.raises(PRNotFound):
        await client.head_sha(PRRef("acme", "private", 1))


async def test_we_are_the_apps_bot(github: FakeGitHub, client: GitHubClient) -> None:
    shop = client.for_installation(SHOP)
    assert await shop.authenticated_login() == "pr-review[bot]"
    assert await client.authenticated_login() == "pr-review[bot]"
    response = await shop.create_issue_comment(SHOP_PR, "summary")
    assert response.json()["user"] == {**response.json()["user"], "login": "pr-review[bot]", "type": "Bot"}
    assert len([r for r in github.requests if r.path == "/app"]) == 1  # asked once


async def test_with_a_token_nothing_changes(github: FakeGitHub) -> None:
    client = GitHubClient(github.url, "ghp_personal")
    try:
        assert client.for_installation(SHOP) is client
        assert await client.installation_id("acme", "shop") is None
        assert await client.head_sha(SHOP_PR) == github.head_sha("acme", "shop", 7)
        assert _authorizations(github, "/pulls/7") == ["Bearer ghp_personal"]
        assert await client.authenticated_login() == "pr-review-bot"
    finally:
        await client.aclose()
    with pytest.raises(ValueError):
        GitHubClient(github.url, "ghp_personal", app=GitHubApp(github.url, APP_ID, _pem_pair()[0]))


# --- settings ---------------------------------------------------------------------------------------
def test_without_an_app_id_the_key_file_is_never_read(tmp_path: Path) -> None:
    settings = Settings(github_app_private_key_file=tmp_path / "absent.pem")  # as Kubernetes always sets it
    assert settings.github_app_key() is None


def test_the_key_comes_from_text_or_file(tmp_path: Path, keys: tuple[str, str]) -> None:
    key_file = tmp_path / "private-key.pem"
    key_file.write_text(keys[0])
    from_file = Settings(github_app_id=APP_ID, github_app_private_key_file=key_file).github_app_key()
    from_text = Settings(github_app_id=APP_ID, github_app_private_key=keys[0]).github_app_key()
    assert from_file is not None and from_text is not None
    assert from_file.get_secret_value() == from_text.get_secret_value() == keys[0]
    assert keys[0] not in repr(Settings(github_app_id=APP_ID, github_app_private_key=keys[0]))


def test_an_app_id_without_a_readable_key_stops_the_start(tmp_path: Path) -> None:
    settings = Settings(github_app_id=APP_ID, github_app_private_key_file=tmp_path / "absent.pem")
    with pytest.raises(AppKeyMissing, match="absent.pem"):
        settings.github_app_key()
    (tmp_path / "empty.pem").write_text("")
    with pytest.raises(AppKeyMissing, match="empty"):
        Settings(github_app_id=APP_ID, github_app_private_key_file=tmp_path / "empty.pem").github_app_key()
    with pytest.raises(ValidationError, match="GITHUB_APP_PRIVATE_KEY"):
        Settings(github_app_id=APP_ID)


def test_empty_variables_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GITHUB_APP_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_FILE", "GITHUB_WEBHOOK_SECRET"):
        monkeypatch.setenv(name, "")
    settings = Settings()
    assert (settings.github_app_id, settings.github_webhook_secret, settings.github_app_key()) == (None, None, None)
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "s3cret")
    monkeypatch.setenv("GITHUB_APP_ID", str(APP_ID))
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", "pem")
    settings = Settings()
    assert settings.github_webhook_secret is not None and settings.github_webhook_secret.get_secret_value() == "s3cret"
    assert settings.github_app_id == APP_ID


async def test_github_client_acts_as_the_app_when_configured(github: FakeGitHub, keys: tuple[str, str]) -> None:
    from actors.resources import github_client

    client = github_client(Settings(github_api_url=github.url, github_app_id=APP_ID,
                                    github_app_private_key=keys[0], github_token="ghp_ignored"))
    try:
        assert client.app is not None and client.app.app_id == APP_ID
        assert await client.for_installation(SHOP).head_sha(SHOP_PR) == github.head_sha("acme", "shop", 7)
    finally:
        await client.aclose()
    plain = github_client(Settings(github_api_url=github.url, github_token="ghp_personal"))
    assert plain.app is None
    await plain.aclose()
