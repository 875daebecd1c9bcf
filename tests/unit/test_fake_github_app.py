"""The fake GitHub as a GitHub App's GitHub: JWTs checked as GitHub checks them, installation
tokens that expire and reach only their installation's repositories, bot authorship, and webhook
deliveries signed as GitHub signs them (checked here with hmac, independently of the fake)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from prreview.demo import FakeFile
from prreview.demo._server import BackgroundServer
from tests.fakes import FakeGitHub

pytestmark = pytest.mark.timeout(60)
APP_ID = 4242
SHOP, OTHER = 12345, 777
SECRET = "It's a Secret to Everybody"


def _pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return _pem_pair()


@pytest.fixture(scope="module")
def stranger_key() -> str:
    return _pem_pair()[0]


@pytest.fixture
def github(keys: tuple[str, str]) -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        fake.add_pr("acme", "shop", 7, [FakeFile("a.py", base="x = 0\n", head="x = 1\n")], title="Fix x",
                    commits=["first", "second"])
        fake.add_pr("acme", "other", 3, [FakeFile("b.py", head="y = 2\n")])
        fake.install_app(APP_ID, keys[1], installations={SHOP: [("acme", "shop")], OTHER: [("acme", "other")]})
        yield fake


def _jwt(private_pem: str, *, iss: object = APP_ID, iat: float = -60, exp: float = 300) -> str:
    """Signed at the JWS level: PyJWT's own `encode` refuses a numeric `iss`, which GitHub takes."""
    now = int(time.time())
    claims = json.dumps({"iat": now + int(iat), "exp": now + int(exp), "iss": iss}).encode()
    return jwt.api_jws.encode(claims, private_pem, algorithm="RS256", headers={"typ": "JWT"})


def _hs256_with(secret: str) -> str:
    """What PyJWT refuses to make: an HS256 token keyed with a PEM (an attacker makes it by hand)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    head = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(json.dumps({"iat": now - 60, "exp": now + 300,
                                                                             "iss": APP_ID}).encode())
    return head + "." + part(hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest())


def _call(fake: FakeGitHub, method: str, path: str, credential: str | None = None,
          body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return httpx.request(method, fake.url + path, headers=headers, json=body, timeout=10)


def _token(fake: FakeGitHub, private_pem: str, installation: int = SHOP) -> str:
    answer = _call(fake, "POST", f"/app/installations/{installation}/access_tokens", _jwt(private_pem))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


# --- the App's JWT --------------------------------------------------------------------------------
@pytest.mark.parametrize("iss", [APP_ID, str(APP_ID)])
def test_a_valid_jwt_gets_the_app_and_its_installations(github: FakeGitHub, keys: tuple[str, str],
                                                        iss: object) -> None:
    token = _jwt(keys[0], iss=iss)
    app = _call(github, "GET", "/app", token)
    assert app.status_code == 200
    assert (app.json()["id"], app.json()["slug"]) == (APP_ID, "pr-review")
    installation = _call(github, "GET", "/repos/acme/shop/installation", token).json()
    assert (installation["id"], installation["app_id"], installation["account"]["login"]) == (SHOP, APP_ID, "acme")
    assert _call(github, "GET", "/repos/acme/nowhere/installation", token).status_code == 404
    assert _call(github, "GET", f"/app/installations/{OTHER}", token).json()["id"] == OTHER


@pytest.mark.parametrize("case", ["stranger's key", "another app id", "long-lived", "exp far after iat",
                                  "expired", "issued in the future", "HS256", "none"])
def test_a_bad_jwt_is_refused_with_githubs_401(github: FakeGitHub, keys: tuple[str, str], stranger_key: str,
                                               case: str) -> None:
    private, public = keys
    credential = {
        "stranger's key": lambda: _jwt(stranger_key),
        "another app id": lambda: _jwt(private, iss=APP_ID + 1),
        "long-lived": lambda: _jwt(private, exp=3600),
        "exp far after iat": lambda: _jwt(private, iat=-500, exp=300),  # 800 s of life
        "expired": lambda: _jwt(private, iat=-700, exp=-90),
        "issued in the future": lambda: _jwt(private, iat=300, exp=500),
        "HS256": lambda: _hs256_with(public),  # the public key as an HMAC secret: algorithm confusion
        "none": lambda: None,
    }[case]()
    for method, path in [("GET", "/app"), ("POST", f"/app/installations/{SHOP}/access_tokens"),
                         ("GET", "/repos/acme/shop/installation")]:
        answer = _call(github, method, path, credential)
        assert answer.status_code == 401, (case, path)
        assert set(answer.json()) >= {"message", "documentation_url"}
    assert github.issued_app_tokens() == []


def test_the_docs_own_jwt_is_accepted(github: FakeGitHub, keys: tuple[str, str]) -> None:
    """GitHub's docs: `iat` 60 s in the past, `exp` 10 minutes ahead."""
    assert _call(github, "GET", "/app", _jwt(keys[0], iat=-60, exp=600)).status_code == 200


# --- installation tokens --------------------------------------------------------------------------
def test_an_installation_token_has_githubs_shape(github: FakeGitHub, keys: tuple[str, str]) -> None:
    answer = _call(github, "POST", f"/app/installations/{SHOP}/access_tokens", _jwt(keys[0]))
    assert answer.status_code == 201
    data = answer.json()
    assert data["token"].startswith("ghs_") and len(data["token"]) == 40
    expires = datetime.strptime(data["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert 3590 < expires - time.time() <= 3600
    assert data["repository_selection"] == "selected" and data["permissions"]["pull_requests"] == "write"
    assert [(t.token, t.installation_id) for t in github.issued_app_tokens()] == [(data["token"], SHOP)]
    assert _call(github, "POST", "/app/installations/999/access_tokens", _jwt(keys[0])).status_code == 404


def test_an_installation_token_reaches_only_its_repositories(github: FakeGitHub, keys: tuple[str, str]) -> None:
    token = _token(github, keys[0], SHOP)
    assert _call(github, "GET", "/repos/acme/shop/pulls/7", token).status_code == 200
    assert _call(github, "GET", "/repos/acme/other/pulls/3", token).status_code == 404
    assert _call(github, "GET", "/user", token).status_code == 403
    assert _call(github, "GET", "/app", token).status_code == 401  # the App's endpoints take its JWT only
    assert _call(github, "GET", "/repos/acme/shop/pulls/7", "ghs_" + "x" * 36).status_code == 401


def test_an_installation_token_expires(github: FakeGitHub, keys: tuple[str, str]) -> None:
    assert github.app is not None
    github.app.token_ttl_s = 0.5
    token = _token(github, keys[0])
    assert _call(github, "GET", "/repos/acme/shop/pulls/7", token).status_code == 200
    time.sleep(0.7)
    answer = _call(github, "GET", "/repos/acme/shop/pulls/7", token)
    assert (answer.status_code, answer.json()["message"]) == (401, "Bad credentials")


def test_expired_by_hand(github: FakeGitHub, keys: tuple[str, str]) -> None:
    token = _token(github, keys[0])
    github.expire_app_tokens()
    assert _call(github, "GET", "/repos/acme/shop/pulls/7", token).status_code == 401


def test_what_an_installation_token_posts_is_by_the_bot(github: FakeGitHub, keys: tuple[str, str]) -> None:
    token = _token(github, keys[0])
    comment = _call(github, "POST", "/repos/acme/shop/issues/7/comments", token, {"body": "hi"}).json()
    assert (comment["user"]["login"], comment["user"]["type"]) == ("pr-review[bot]", "Bot")
    review = _call(github, "POST", "/repos/acme/shop/pulls/7/reviews", token, {"event": "COMMENT", "body": "ok"})
    assert (review.json()["user"]["login"], review.json()["user"]["type"]) == ("pr-review[bot]", "Bot")
    edited = _call(github, "PATCH", f"/repos/acme/shop/issues/comments/{comment['id']}", token, {"body": "hey"})
    assert edited.status_code == 200
    by_token = _call(github, "POST", "/repos/acme/shop/issues/7/comments", "ghp_personal", {"body": "me"}).json()
    assert (by_token["user"]["login"], by_token["user"]["type"]) == ("pr-review-bot", "User")


# --- webhook deliveries ---------------------------------------------------------------------------
def _capture() -> tuple[httpx.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"ok": True})

    return httpx.Client(transport=httpx.MockTransport(handler)), seen


def test_a_delivery_is_signed_as_github_signs_it(github: FakeGitHub) -> None:
    client, seen = _capture()
    github.add_pr("acme", "shop", 8, [FakeFile("c.py", head="z = 'é'\n")], title="Café ☕")
    payload = github.pull_request_event("acme", "shop", 8, "opened")
    answer = github.deliver("http://receiver.test/v1/github/webhook", "pull_request", payload, secret=SECRET,
                            client=client)
    assert answer.status_code == 202
    request = seen[0]
    body = request.content
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert request.headers["x-hub-signature-256"] == f"sha256={expected}"
    assert request.headers["x-hub-signature"] == "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    assert request.headers["x-github-event"] == "pull_request"
    assert str(uuid.UUID(request.headers["x-github-delivery"])) == request.headers["x-github-delivery"]
    assert request.headers["user-agent"].startswith("GitHub-Hookshot/")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-github-hook-installation-target-type"] == "integration"
    assert request.headers["x-github-hook-installation-target-id"] == str(APP_ID)
    assert "Café ☕".encode() in body  # raw UTF-8, as GitHub sends: a re-encoded body would not match
    assert json.loads(body) == payload
    assert [(d.event, d.status) for d in github.deliveries] == [("pull_request", 202)]


def test_a_redelivery_keeps_its_id_and_no_secret_means_no_signature(github: FakeGitHub) -> None:
    client, seen = _capture()
    payload = github.ping_event("http://receiver.test/hook")
    github.deliver("http://receiver.test/hook", "ping", payload, secret=SECRET, delivery_id="abc", client=client)
    github.deliver("http://receiver.test/hook", "ping", payload, secret=SECRET, delivery_id="abc", client=client)
    github.deliver("http://receiver.test/hook", "ping", payload, secret=None, client=client)
    assert [r.headers["x-github-delivery"] for r in seen[:2]] == ["abc", "abc"]
    assert "x-hub-signature-256" not in seen[2].headers
    assert seen[0].headers["x-github-hook-id"] == str(github.hook_id)


def test_a_delivery_over_http(github: FakeGitHub) -> None:
    """The default client, against a receiver that checks the signature itself."""
    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(good, request.headers.get("x-hub-signature-256", ""))
        return JSONResponse({"event": request.headers["x-github-event"]}, status_code=200 if ok else 401)

    with BackgroundServer(Starlette(routes=[Route("/hook", receive, methods=["POST"])])) as receiver:
        payload = github.issue_comment_event("acme", "shop", 7, "/review")
        assert github.deliver(receiver.url + "/hook", "issue_comment", payload, secret=SECRET).status_code == 200
        assert github.deliver(receiver.url + "/hook", "issue_comment", payload, secret="wrong").status_code == 401


@pytest.mark.parametrize("action", ["opened", "reopened", "synchronize", "ready_for_review", "closed"])
def test_pull_request_payloads_have_githubs_shape(github: FakeGitHub, action: str) -> None:
    payload = github.pull_request_event("acme", "shop", 7, action)
    pr, repo = payload["pull_request"], payload["repository"]
    assert (payload["action"], payload["number"], pr["number"]) == (action, 7, 7)
    assert pr["head"]["sha"] == github.head_sha("acme", "shop", 7)
    assert (pr["base"]["ref"], pr["draft"], pr["user"]["login"], pr["user"]["type"]) == ("main", False, "dev-alice",
                                                                                           "User")
    assert pr["state"] == ("closed" if action == "closed" else "open")
    assert pr["html_url"] == f"{github.url}/acme/shop/pull/7"
    assert (repo["full_name"], repo["name"], repo["owner"]["login"]) == ("acme/shop", "shop", "acme")
    assert repo["html_url"] == f"{github.url}/acme/shop"
    assert payload["installation"]["id"] == SHOP
    assert payload["sender"]["login"] == "dev-alice"
    if action == "synchronize":
        assert payload["after"] == pr["head"]["sha"] and payload["before"] != payload["after"]
    rest = _call(github, "GET", "/repos/acme/shop/pulls/7", "ghp_any").json()
    assert rest["state"] == pr["state"]  # the event and the REST API agree


def test_draft_and_bot_pull_requests(github: FakeGitHub) -> None:
    github.add_pr("acme", "shop", 9, [FakeFile("d.py", head="1\n")], draft=True, author="dependabot[bot]")
    opened = github.pull_request_event("acme", "shop", 9, "opened")
    assert opened["pull_request"]["draft"] is True
    assert (opened["pull_request"]["user"]["type"], opened["sender"]["type"]) == ("Bot", "Bot")
    ready = github.pull_request_event("acme", "shop", 9, "ready_for_review", sender="maintainer")
    assert ready["pull_request"]["draft"] is False and ready["sender"]["login"] == "maintainer"


def test_issue_comment_payloads(github: FakeGitHub) -> None:
    payload = github.issue_comment_event("acme", "shop", 7, "/review\nplease", author="carol",
                                         author_association="MEMBER")
    issue, comment = payload["issue"], payload["comment"]
    assert payload["action"] == "created" and issue["number"] == 7 and "pull_request" in issue
    assert issue["pull_request"]["html_url"] == f"{github.url}/acme/shop/pull/7"
    assert (comment["body"], comment["author_association"], comment["user"]["login"]) == ("/review\nplease",
                                                                                          "MEMBER", "carol")
    assert payload["installation"]["id"] == SHOP and payload["repository"]["full_name"] == "acme/shop"
    assert [c["id"] for c in github.issue_comments("acme", "shop", 7)] == [comment["id"]]  # GitHub has it too
    plain = github.issue_comment_event("acme", "shop", 50, "/review", author_association="NONE",
                                       on_pull_request=False)
    assert "pull_request" not in plain["issue"] and plain["comment"]["author_association"] == "NONE"
    with pytest.raises(ValueError):
        github.issue_comment_event("acme", "shop", 7, "x", author_association="FRIEND")


def test_ping_payload(github: FakeGitHub) -> None:
    payload = github.ping_event("https://review.example/v1/github/webhook")
    assert payload["zen"] and payload["hook_id"] == github.hook_id == payload["hook"]["id"]
    assert (payload["hook"]["type"], payload["hook"]["app_id"]) == ("App", APP_ID)
    assert payload["hook"]["config"]["url"] == "https://review.example/v1/github/webhook"
