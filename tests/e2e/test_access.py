"""Safe to expose: every /v1 route needs a key, keys have rights and quotas, a key sees its own
reviews, JSON bodies only, the page refuses foreign hosts. Checked from outside, over HTTP."""

from __future__ import annotations

import json
import stat
import uuid

import httpx
import pytest

from serve_app.client import Client
from tests.helpers import add_pr, wait_for, wait_terminal
from tests.secure_stack import OPERATOR, make_key, pr_review_cli, secure_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROUTES = [("POST", "/v1/reviews"), ("GET", "/v1/reviews"), ("GET", f"/v1/reviews/{uuid.uuid4()}"),
          ("DELETE", f"/v1/reviews/{uuid.uuid4()}"), ("GET", f"/v1/reviews/{uuid.uuid4()}/events"),
          ("POST", "/v1/batches"), ("GET", f"/v1/batches/{uuid.uuid4()}"), ("GET", "/v1/cluster")]


@pytest.fixture
def secure(stacks):  # noqa: ANN001, ANN201 - pytest fixture
    return secure_stack(stacks)


def as_key(stack, key: str) -> httpx.Client:  # noqa: ANN001
    return httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("authorization",
                         [None, "Bearer not-a-key", "Bearer prk_0123456789ab_wrong", "Basic b3BzOng="])
def test_every_v1_route_needs_a_valid_key(secure, method: str, path: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.request(method, f"{secure.api_url}{path}", headers=headers, json={"pr_url": "x"})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


def test_the_operator_key_may_do_everything(secure) -> None:
    with as_key(secure, OPERATOR[1]) as ops:
        submitted = ops.post("/v1/reviews", json={"pr_url": add_pr(secure.github), "options": {"post": True}})
        assert submitted.status_code == 202, submitted.text
        assert ops.get("/v1/cluster").status_code == 200
        with Client(secure.api_url, api_key=OPERATOR[1]) as api:
            done = wait_terminal(api, submitted.json()["id"])
    assert done["status"] == "succeeded", done["error"]


def test_a_body_that_is_not_json_is_refused_before_it_is_read(secure) -> None:
    with as_key(secure, OPERATOR[1]) as ops:
        form = ops.post("/v1/reviews", content=b'{"pr_url": "' + add_pr(secure.github).encode() + b'"}',
                        headers={"Content-Type": "text/plain"})
        assert form.status_code == 415 and form.json()["error"]["code"] == "unsupported_media_type"
        assert ops.post("/v1/batches", data={"pr_urls": "x"}).status_code == 415
        assert ops.get("/v1/reviews", params={"limit": 5}).status_code == 200


def test_rights_read_only_and_no_publishing(secure) -> None:
    reader, author = make_key(secure, f"reader-{uuid.uuid4().hex[:6]}", "--read-only"), \
        make_key(secure, f"author-{uuid.uuid4().hex[:6]}", "--no-publish")
    pr_url = add_pr(secure.github)
    with as_key(secure, reader) as read_only, as_key(secure, author) as no_publish:
        refused = read_only.post("/v1/reviews", json={"pr_url": pr_url})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        assert read_only.get("/v1/reviews").json() == {"items": []}
        assert read_only.get("/v1/cluster").status_code == 403
        publish = no_publish.post("/v1/reviews", json={"pr_url": pr_url, "options": {"post": True}})
        assert publish.status_code == 403
        accepted = no_publish.post("/v1/reviews", json={"pr_url": pr_url})
        assert accepted.status_code == 202
        with Client(secure.api_url, api_key=author) as api:
            wait_terminal(api, accepted.json()["id"])


def test_a_key_sees_and_cancels_only_its_own_reviews(secure) -> None:
    alice, bob = make_key(secure, f"alice-{uuid.uuid4().hex[:6]}"), make_key(secure, f"bob-{uuid.uuid4().hex[:6]}")
    secure.llm.latency_s = 5.0
    try:
        with as_key(secure, alice) as a, as_key(secure, bob) as b, as_key(secure, OPERATOR[1]) as ops:
            pr_url = add_pr(secure.github)
            mine = a.post("/v1/reviews", json={"pr_url": pr_url}).json()
            # The same PR from another key is another review: one key never learns of another's.
            theirs = b.post("/v1/reviews", json={"pr_url": pr_url})
            assert theirs.status_code == 202 and theirs.json()["id"] != mine["id"]
            for path in (f"/v1/reviews/{mine['id']}", f"/v1/reviews/{mine['id']}/events"):
                assert b.get(path).status_code == 404
            assert b.delete(f"/v1/reviews/{mine['id']}").status_code == 404
            assert mine["id"] not in {j["id"] for j in b.get("/v1/reviews").json()["items"]}
            assert mine["id"] in {j["id"] for j in ops.get("/v1/reviews").json()["items"]}  # admin sees all
            assert a.delete(f"/v1/reviews/{mine['id']}").status_code == 202
            assert b.delete(f"/v1/reviews/{theirs.json()['id']}").status_code == 202
    finally:
        secure.llm.latency_s = 0.0


def test_quotas_answer_429_with_retry_after(secure) -> None:
    busy = make_key(secure, f"busy-{uuid.uuid4().hex[:6]}", "--max-active", "1")
    hourly = make_key(secure, f"hourly-{uuid.uuid4().hex[:6]}", "--per-hour", "2")
    secure.llm.latency_s = 5.0
    try:
        with as_key(secure, busy) as one_at_a_time, as_key(secure, hourly) as two_an_hour:
            first = one_at_a_time.post("/v1/reviews", json={"pr_url": add_pr(secure.github)})
            assert first.status_code == 202
            over = one_at_a_time.post("/v1/reviews", json={"pr_url": add_pr(secure.github)})
            assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"
            assert int(over.headers["retry-after"]) > 0
            ids = [two_an_hour.post("/v1/reviews", json={"pr_url": add_pr(secure.github)}).json()["id"]
                   for _ in range(2)]
            third = two_an_hour.post("/v1/reviews", json={"pr_url": add_pr(secure.github)})
            assert third.status_code == 429 and 3000 < int(third.headers["retry-after"]) <= 3600
            for client, job_id in [(one_at_a_time, first.json()["id"])] + [(two_an_hour, i) for i in ids]:
                client.delete(f"/v1/reviews/{job_id}")
    finally:
        secure.llm.latency_s = 0.0


def test_a_batch_keeps_to_the_keys_quota_and_the_cli_still_finishes_it(secure, tmp_path) -> None:
    key = make_key(secure, f"batcher-{uuid.uuid4().hex[:6]}", "--max-active", "1")
    urls = [add_pr(secure.github) for _ in range(3)]
    secure.llm.latency_s = 2.0
    try:
        with as_key(secure, key) as client:
            answer = client.post("/v1/batches", json={"pr_urls": urls})
            assert answer.status_code == 202, answer.text
            items = answer.json()["reviews"]
            assert "id" in items[0] and [i["error"]["code"] for i in items[1:]] == ["quota_exceeded"] * 2
    finally:
        secure.llm.latency_s = 0.0
    # `pr-review batch` offers the refused PRs again until the key has room, and ends with all three.
    (tmp_path / "prs.txt").write_text("\n".join(urls))
    ran = pr_review_cli(secure, "batch", str(tmp_path / "prs.txt"), "--out", str(tmp_path / "out"), "--poll-s",
                        "0.3", PR_REVIEW_API_KEY=key, PR_REVIEW_API_URL=secure.api_url)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["totals"]["counts"] == {"succeeded": 3}
    with as_key(secure, key) as client:
        mine = client.get("/v1/reviews", params={"limit": 10}).json()["items"]
    assert sorted(r["pr_url"] for r in mine) == sorted(urls)  # one review each: nothing ran twice


def test_a_revoked_key_stops_working_at_once(secure) -> None:
    name = f"leaving-{uuid.uuid4().hex[:6]}"
    key = make_key(secure, name)
    with as_key(secure, key) as client:
        assert client.get("/v1/reviews").status_code == 200  # known, and cached by the ingress
        listed = pr_review_cli(secure, "keys", "list")
        assert name in listed.stdout and key not in listed.stdout  # the key itself is never shown again
        assert pr_review_cli(secure, "keys", "revoke", name).returncode == 0
        wait_for(lambda: client.get("/v1/reviews").status_code == 401, timeout_s=2, interval_s=0.05,
                 what="the revoked key to be refused")


def test_the_page_refuses_a_foreign_host(secure) -> None:
    port = secure.api_url.rsplit(":", 1)[1]
    assert httpx.get(f"{secure.api_url}/").status_code == 200
    rebound = httpx.get(f"{secure.api_url}/", headers={"Host": f"attacker.example:{port}"})
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "forbidden_host"
    assert httpx.get(f"{secure.api_url}/assets/app.js", headers={"Host": "attacker.example"}).status_code == 403


def test_serve_keeps_its_local_key_readable_by_its_owner_only(stack) -> None:
    assert stack.local.key_file is not None
    assert stat.S_IMODE(stack.local.key_file.stat().st_mode) == 0o600
    assert stack.key.startswith("prk_")
    with as_key(stack, stack.key) as local:
        assert local.get("/v1/cluster").status_code == 200  # the local key is an admin key
