"""The fake GitHub, driven over real HTTP: shapes, pagination, faults, anchoring of comments."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from unidiff.patch import PatchSet

from prreview.demo import install_sample_pr
from prreview.demo._patch import unified_patch
from prreview.demo.sample_pr import SAMPLE_PR_BODY, SAMPLE_PR_DEFECTS, SAMPLE_PR_FILES
from tests.fakes import FakeFile, FakeGitHub

REPO = Path(__file__).resolve().parents[2]  # `python -m tests.fakes...` runs from here
TOKEN = "ghp_test_token"
PR = "/repos/acme/payments/pulls/42"


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN) as server:
        install_sample_pr(server)
        yield server


@pytest.fixture
def client(gh: FakeGitHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gh.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as c:
        yield c


def _links(response: httpx.Response) -> dict[str, str]:
    return {rel: url for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', response.headers.get("link", ""))}


def _head(client: httpx.Client) -> str:
    return str(client.get(PR).json()["head"]["sha"])


# --- reading a PR -----------------------------------------------------------------------------------
def test_pull_request_has_github_fields(gh: FakeGitHub, client: httpx.Client) -> None:
    response = client.get(PR)
    assert response.status_code == 200
    pr = response.json()
    assert pr["number"] == 42 and pr["state"] == "open"
    assert pr["html_url"] == gh.pr_url("acme", "payments", 42) == f"{gh.url}/acme/payments/pull/42"
    assert pr["user"]["login"] == "jdoe-acme"
    assert pr["head"]["sha"] == gh.head_sha("acme", "payments", 42)
    assert pr["head"]["ref"] == "feature/invoice-search"
    assert pr["head"]["repo"]["full_name"] == "acme/payments"
    assert pr["base"]["ref"] == "main" and len(pr["base"]["sha"]) == 40
    assert pr["changed_files"] == 5 and pr["commits"] == 3
    assert pr["body"] == SAMPLE_PR_BODY and "Ignore previous instructions" in pr["body"]
    files = client.get(PR + "/files").json()
    assert pr["additions"] == sum(f["additions"] for f in files)
    assert pr["deletions"] == sum(f["deletions"] for f in files)


def test_files_have_patches_computed_from_base_and_head(client: httpx.Client) -> None:
    files = {f["filename"]: f for f in client.get(PR + "/files").json()}
    by_name = {f.filename: f for f in SAMPLE_PR_FILES}
    assert set(files) == set(by_name)
    image = files["docs/img/invoice-search.png"]
    assert image["status"] == "added" and "patch" not in image and image["changes"] == 0
    for name, data in files.items():
        fake = by_name[name]
        if fake.binary:
            continue
        assert data["patch"].startswith("@@ ") and not data["patch"].endswith("\n")
        parsed = PatchSet(f"--- a/{name}\n+++ b/{name}\n{data['patch']}\n")[0]
        assert (data["additions"], data["deletions"]) == (parsed.added, parsed.removed)
        assert data["changes"] == parsed.added + parsed.removed
        # Applying the patch to the base gives the head.
        base = fake.base.splitlines() if isinstance(fake.base, str) else []
        head: list[str] = []
        cursor = 0
        for hunk in parsed:
            start = max(hunk.source_start - 1, 0)
            head += base[cursor:start]
            cursor = start
            for line in hunk:
                if line.line_type in (" ", "-"):
                    assert base[cursor] == line.value.rstrip("\n")
                    cursor += 1
                if line.line_type in (" ", "+"):
                    head.append(line.value.rstrip("\n"))
        head += base[cursor:]
        assert head == fake.head.splitlines()  # type: ignore[union-attr]
        assert data["blob_url"].endswith(f"/blob/{_head_of(data)}/{name}")
        assert data["contents_url"].endswith(f"/repos/acme/payments/contents/{name}?ref={_head_of(data)}")


def _head_of(file: dict[str, object]) -> str:
    return str(file["raw_url"]).split("/raw/")[1].split("/")[0]


def test_hunk_headers_and_missing_newline_match_git() -> None:
    assert unified_patch("x\ny\nz", "x\ny\nz\nw") == (
        "@@ -1,3 +1,4 @@\n x\n y\n-z\n\\ No newline at end of file\n+z\n+w\n\\ No newline at end of file")
    base = "def handler():\n" + "".join(f"    a{i} = {i}\n" for i in range(10))
    head = base.replace("a7 = 7", "a7 = 70")
    assert unified_patch(base, head).splitlines()[0] == "@@ -6,6 +6,6 @@ def handler():"
    assert unified_patch("", "one\n") == "@@ -0,0 +1 @@\n+one"


def test_renamed_binary_and_oversized_files(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.add_pr("acme", "payments", 7, [
        FakeFile("new/name.py", base="a = 1\n", head="a = 2\n", previous_filename="old/name.py"),
        FakeFile("logo.png", base=b"\x89PNG old", head=b"\x89PNG new"),
        FakeFile("huge.sql", base="", head="x\n", omit_patch=True),
        FakeFile("gone.txt", base="bye\n"),
    ])
    files = {f["filename"]: f for f in client.get("/repos/acme/payments/pulls/7/files").json()}
    assert files["new/name.py"]["status"] == "renamed"
    assert files["new/name.py"]["previous_filename"] == "old/name.py"
    assert files["logo.png"]["status"] == "modified" and "patch" not in files["logo.png"]
    assert "patch" not in files["huge.sql"] and files["huge.sql"]["additions"] == 1
    assert files["gone.txt"]["status"] == "removed" and files["gone.txt"]["patch"] == "@@ -1 +0,0 @@\n-bye"


def test_files_are_paginated_with_link_headers(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.make_synthetic_pr("acme", "big", 1, file_count=250)
    first = client.get("/repos/acme/big/pulls/1/files")
    assert len(first.json()) == 30  # GitHub's default page size
    links = _links(first)
    assert set(links) == {"next", "last"}
    assert "page=2" in links["next"] and "page=9" in links["last"]
    names: list[str] = []
    url: str | None = "/repos/acme/big/pulls/1/files?per_page=100"
    pages = 0
    while url:
        response = client.get(url)
        names += [f["filename"] for f in response.json()]
        url = _links(response).get("next")
        pages += 1
    assert pages == 3 and len(names) == len(set(names)) == 250
    middle = client.get("/repos/acme/big/pulls/1/files", params={"per_page": 100, "page": 2})
    assert set(_links(middle)) == {"prev", "next", "last", "first"}
    assert len(client.get("/repos/acme/big/pulls/1/files", params={"per_page": 500}).json()) == 100
    statuses = {f["status"] for f in client.get("/repos/acme/big/pulls/1/files?per_page=100").json()}
    assert {"added", "modified", "removed", "renamed"} <= statuses


def test_file_listing_stops_at_3000(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.make_synthetic_pr("acme", "huge", 1, file_count=3005, lines_per_file=4)
    assert client.get("/repos/acme/huge/pulls/1").json()["changed_files"] == 3005
    last = client.get("/repos/acme/huge/pulls/1/files", params={"per_page": 100, "page": 30})
    assert len(last.json()) == 100 and "next" not in _links(last)
    assert client.get("/repos/acme/huge/pulls/1/files", params={"per_page": 100, "page": 31}).json() == []


def test_commits_are_listed_and_paginated(gh: FakeGitHub, client: httpx.Client) -> None:
    commits = client.get(PR + "/commits").json()
    assert [c["commit"]["message"] for c in commits][-1] == "Back off between webhook delivery attempts"
    assert commits[-1]["sha"] == _head(client)
    assert commits[1]["parents"][0]["sha"] == commits[0]["sha"]
    assert commits[0]["commit"]["author"]["name"] == "jdoe-acme"
    page = client.get(PR + "/commits", params={"per_page": 2})
    assert len(page.json()) == 2 and "page=2" in _links(page)["last"]


def test_contents_at_head_and_base(client: httpx.Client) -> None:
    pr = client.get(PR).json()
    fake = next(f for f in SAMPLE_PR_FILES if f.filename == "payments/config.py")
    for ref, expected in ((pr["head"]["sha"], fake.head), (pr["base"]["sha"], fake.base),
                          ("feature/invoice-search", fake.head)):
        data = client.get("/repos/acme/payments/contents/payments/config.py", params={"ref": ref}).json()
        assert (data["type"], data["encoding"], data["path"]) == ("file", "base64", "payments/config.py")
        assert base64.b64decode(data["content"]).decode() == expected
    png = client.get("/repos/acme/payments/contents/docs/img/invoice-search.png",
                     params={"ref": pr["head"]["sha"]}).json()
    assert base64.b64decode(png["content"]).startswith(b"\x89PNG\r\n\x1a\n")
    # The test file is new: it does not exist at the base.
    missing = client.get("/repos/acme/payments/contents/tests/test_invoices.py",
                         params={"ref": pr["base"]["sha"]})
    assert missing.status_code == 404


def test_unknown_things_are_404_in_github_shape(client: httpx.Client) -> None:
    paths = ("/repos/acme/payments/pulls/43", "/repos/acme/nope/pulls/42", "/repos/nobody/x/pulls/1/files",
             "/repos/acme/payments/contents/nope.py", "/no/such/endpoint")
    for path in paths:
        response = client.get(path)
        assert response.status_code == 404, path
        body = response.json()
        assert body["message"] == "Not Found" and body["documentation_url"].startswith("https://docs.github.com")
        assert "x-ratelimit-remaining" in response.headers


def test_diff_media_type(client: httpx.Client) -> None:
    diff = client.get(PR, headers={"Accept": "application/vnd.github.diff"}).text
    assert "diff --git a/payments/config.py b/payments/config.py" in diff
    assert "+++ b/tests/test_invoices.py" in diff and "--- /dev/null" in diff
    assert "Binary files a/docs/img/invoice-search.png and b/docs/img/invoice-search.png differ" in diff
    assert len(PatchSet(diff)) == 5


# --- rate limits, faults, latency ----------------------------------------------------------------------
def test_every_response_carries_rate_limit_headers(client: httpx.Client) -> None:
    first = client.get(PR)
    second = client.get(PR + "/files")
    for response in (first, second):
        assert response.headers["x-ratelimit-limit"] == "5000"
        assert response.headers["x-ratelimit-resource"] == "core"
        assert int(response.headers["x-ratelimit-reset"]) > time.time()
    assert int(second.headers["x-ratelimit-remaining"]) == int(first.headers["x-ratelimit-remaining"]) - 1
    before = client.get("/rate_limit").json()["resources"]["core"]
    after = client.get("/rate_limit").json()["resources"]["core"]
    assert before == after and before["used"] == 2  # /rate_limit itself is free
    with httpx.Client(base_url=str(client.base_url)) as anonymous:
        assert anonymous.get(PR).headers["x-ratelimit-limit"] == "60"


def test_primary_rate_limit(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.rate_limit_next(2, kind="primary", reset_in_s=30)
    for _ in range(2):
        limited = client.get(PR)
        assert limited.status_code == 403
        assert limited.headers["x-ratelimit-remaining"] == "0"
        assert 25 <= int(limited.headers["x-ratelimit-reset"]) - time.time() <= 31
        assert "rate limit" in limited.json()["message"]
    assert client.get(PR).status_code == 200


def test_secondary_rate_limit_matches_a_path(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.rate_limit_next(1, kind="secondary", reset_in_s=2, match="/files")
    assert client.get(PR).status_code == 200  # not matched: untouched
    limited = client.get(PR + "/files")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert "secondary rate limit" in limited.json()["message"]
    assert client.get(PR + "/files").status_code == 200


def test_spent_budget_starts_a_new_window_unless_enforced() -> None:
    with FakeGitHub(anonymous_rate_limit=2) as gh, httpx.Client(base_url=gh.url) as anonymous:
        install_sample_pr(gh)
        responses = [anonymous.get(PR) for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["1", "0", "1"]


def test_enforced_hourly_budget_runs_out() -> None:
    with FakeGitHub(anonymous_rate_limit=3, enforce_rate_limit=True) as gh, \
            httpx.Client(base_url=gh.url) as anonymous:
        install_sample_pr(gh)
        statuses = [anonymous.get(PR).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 403]
        last = anonymous.get(PR)
        assert last.headers["x-ratelimit-remaining"] == "0" and last.headers["x-ratelimit-used"] == "3"
        with httpx.Client(base_url=gh.url, headers={"Authorization": "Bearer other"}) as authenticated:
            assert authenticated.get(PR).status_code == 200  # budgets are per caller


def test_fail_next_then_recover(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.fail_next(2, status=502)
    assert [client.get(PR).status_code for _ in range(3)] == [502, 502, 200]
    assert [r.status for r in gh.requests[-3:]] == [502, 502, 200]


def test_latency(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.latency_s = 0.3
    started = time.monotonic()
    assert client.get(PR).status_code == 200
    assert time.monotonic() - started >= 0.3


# --- tokens ----------------------------------------------------------------------------------------------
def test_requests_are_recorded_with_their_token(gh: FakeGitHub, client: httpx.Client) -> None:
    client.get(PR, params={"x": "1"})
    record = gh.requests[-1]
    assert (record.method, record.path, record.query, record.status) == ("GET", PR, {"x": "1"}, 200)
    assert record.authorization == f"Bearer {TOKEN}"
    assert all(r.authorization == f"Bearer {TOKEN}" for r in gh.requests)


def test_wrong_or_missing_token(gh: FakeGitHub) -> None:
    with httpx.Client(base_url=gh.url, headers={"Authorization": "token wrong"}) as bad:
        assert bad.get(PR).status_code == 401
        assert bad.get(PR).json()["message"] == "Bad credentials"
    with httpx.Client(base_url=gh.url, headers={"Authorization": f"token {TOKEN}"}) as classic:
        assert classic.get(PR).status_code == 200  # GitHub takes both "token" and "Bearer"
    with httpx.Client(base_url=gh.url) as anonymous:
        assert anonymous.get(PR).status_code == 200  # public reads
        posted = anonymous.post(PR + "/reviews", json={"body": "hi", "event": "COMMENT"})
        assert posted.status_code == 401 and gh.posted_reviews("acme", "payments", 42) == []


# --- reviews and comments --------------------------------------------------------------------------------
def _defect(kind: str) -> tuple[str, int]:
    defect = next(d for d in SAMPLE_PR_DEFECTS if d.kind == kind)
    return defect.path, defect.line


def test_review_with_comments_on_the_diff(gh: FakeGitHub, client: httpx.Client) -> None:
    head = _head(client)
    path, line = _defect("code-injection")
    response = client.post(PR + "/reviews", json={
        "commit_id": head, "body": "Two problems.", "event": "REQUEST_CHANGES",
        "comments": [
            {"path": path, "line": line, "side": "RIGHT", "body": "eval of request data"},
            # A removed line, on the LEFT side, and a multi-line range on added lines.
            {"path": "payments/config.py", "line": 8, "side": "LEFT", "body": "was an int"},
            {"path": path, "start_line": line - 2, "start_side": "RIGHT", "line": line, "side": "RIGHT",
             "body": "range"},
        ]})
    assert response.status_code == 200, response.text
    review = response.json()
    assert review["state"] == "CHANGES_REQUESTED" and review["commit_id"] == head and review["id"] > 0
    posted = gh.posted_reviews("acme", "payments", 42)
    assert len(posted) == 1 and [c["line"] for c in posted[0]["comments"]] == [line, 8, line]
    first = posted[0]["comments"][0]
    assert first["side"] == "RIGHT" and first["path"] == path and first["diff_hunk"].startswith("@@")
    last_hunk_line = first["diff_hunk"].splitlines()[-1]
    assert last_hunk_line.startswith("+") and "eval(" in last_hunk_line
    assert posted[0]["comments"][2]["start_line"] == line - 2
    assert client.get(PR + "/reviews").json() == [review]
    assert len(client.get(PR + "/comments").json()) == 3


@pytest.mark.parametrize("comment", [
    {"path": "payments/config.py", "line": 1, "side": "RIGHT"},  # line not in any hunk
    {"path": "payments/config.py", "line": 12, "side": "LEFT"},  # added line on the old side
    {"path": "payments/api/invoices.py", "line": 5, "start_line": 40, "side": "RIGHT"},  # range across hunks
    {"path": "payments/config.py", "line": 999},
])
def test_comment_off_the_diff_is_422(gh: FakeGitHub, client: httpx.Client,
                                     comment: dict[str, object]) -> None:
    good = {"path": "payments/config.py", "line": 12, "side": "RIGHT", "body": "fine"}
    response = client.post(PR + "/reviews", json={"body": "x", "event": "COMMENT",
                                                  "comments": [good, {**comment, "body": "bad"}]})
    assert response.status_code == 422
    body = response.json()
    assert body["message"] == "Unprocessable Entity" and body["errors"]
    if "start_line" not in comment:
        assert body["errors"] == ["Line could not be resolved"]
    # All or nothing, as on GitHub.
    assert gh.posted_reviews("acme", "payments", 42) == []
    assert gh.posted_comments("acme", "payments", 42) == []


def test_comment_on_a_file_outside_the_diff_is_422(client: httpx.Client) -> None:
    response = client.post(PR + "/reviews", json={"event": "COMMENT", "body": "x", "comments": [
        {"path": "README.md", "line": 1, "side": "RIGHT", "body": "?"}]})
    assert response.status_code == 422 and response.json()["errors"] == ["Path could not be resolved"]
    binary = client.post(PR + "/reviews", json={"event": "COMMENT", "body": "x", "comments": [
        {"path": "docs/img/invoice-search.png", "line": 1, "side": "RIGHT", "body": "?"}]})
    assert binary.status_code == 422


def test_review_update_and_bad_event(gh: FakeGitHub, client: httpx.Client) -> None:
    review = client.post(PR + "/reviews", json={"body": "first", "event": "COMMENT"}).json()
    updated = client.put(f"{PR}/reviews/{review['id']}", json={"body": "second"})
    assert updated.status_code == 200 and updated.json()["body"] == "second"
    assert gh.posted_reviews("acme", "payments", 42)[0]["body"] == "second"
    assert client.put(f"{PR}/reviews/1", json={"body": "x"}).status_code == 404
    assert client.post(PR + "/reviews", json={"body": "x", "event": "MERGE"}).status_code == 422
    assert client.post(PR + "/reviews", json={"event": "REQUEST_CHANGES"}).status_code == 422


def test_single_review_comment(gh: FakeGitHub, client: httpx.Client) -> None:
    head = _head(client)
    path, line = _defect("sql-injection")
    created = client.post(PR + "/comments", json={"body": "parametrize this", "commit_id": head, "path": path,
                                                  "line": line, "side": "RIGHT"})
    assert created.status_code == 201
    assert created.json()["line"] == line and created.json()["commit_id"] == head
    reply = client.post(PR + "/comments", json={"body": "agreed", "in_reply_to": created.json()["id"]})
    assert reply.status_code == 201 and reply.json()["in_reply_to_id"] == created.json()["id"]
    off = client.post(PR + "/comments", json={"body": "x", "commit_id": head, "path": path, "line": 2,
                                              "side": "RIGHT"})
    assert off.status_code == 422 and off.json()["errors"] == ["Line could not be resolved"]
    assert [c["body"] for c in gh.posted_comments("acme", "payments", 42)] == ["parametrize this", "agreed"]


def test_push_moves_the_head_and_keeps_old_anchors(gh: FakeGitHub, client: httpx.Client) -> None:
    old_head = _head(client)
    new_head = gh.push("acme", "payments", 42, [
        FakeFile("payments/config.py", base="A = 1\n", head="A = 1\nB = 2\nC = 3\n")],
        messages=["Fix config", "Add C"])
    assert new_head != old_head and _head(client) == new_head
    commits = client.get(PR + "/commits").json()
    assert len(commits) == 5 and commits[-1]["sha"] == new_head
    assert commits[-2]["commit"]["message"] == "Fix config"
    config = next(f for f in client.get(PR + "/files").json() if f["filename"] == "payments/config.py")
    assert config["patch"] == "@@ -1 +1,3 @@\n A = 1\n+B = 2\n+C = 3" and config["additions"] == 2
    data = client.get("/repos/acme/payments/contents/payments/config.py", params={"ref": new_head}).json()
    assert base64.b64decode(data["content"]) == b"A = 1\nB = 2\nC = 3\n"
    # Line 12 of config.py was on the diff at the old head, not at the new one.
    comment = {"path": "payments/config.py", "line": 12, "side": "RIGHT", "body": "secret"}
    assert client.post(PR + "/reviews", json={"event": "COMMENT", "body": "x", "commit_id": old_head,
                                              "comments": [comment]}).status_code == 200
    assert client.post(PR + "/reviews", json={"event": "COMMENT", "body": "x", "commit_id": new_head,
                                              "comments": [comment]}).status_code == 422
    assert client.post(PR + "/reviews", json={"event": "COMMENT", "body": "x", "commit_id": "f" * 40}
                       ).status_code == 422


def test_compare_between_pushes(gh: FakeGitHub, client: httpx.Client) -> None:
    pr = client.get(PR).json()
    base, old_head = pr["base"]["sha"], pr["head"]["sha"]
    config = next(f for f in SAMPLE_PR_FILES if f.filename == "payments/config.py")
    assert isinstance(config.head, str)
    new_head = gh.push("acme", "payments", 42, [
        FakeFile("payments/config.py", base=config.base, head=config.head + "RETRIES = 3\n")],
        messages=["Add RETRIES"])
    since_review = client.get(f"/repos/acme/payments/compare/{old_head}...{new_head}").json()
    assert (since_review["status"], since_review["ahead_by"], since_review["behind_by"]) == ("ahead", 1, 0)
    assert [c["commit"]["message"] for c in since_review["commits"]] == ["Add RETRIES"]
    assert [f["filename"] for f in since_review["files"]] == ["payments/config.py"]
    assert since_review["files"][0]["patch"].endswith("\n+RETRIES = 3")
    whole = client.get(f"/repos/acme/payments/compare/{base}...{new_head}").json()
    assert whole["ahead_by"] == 4 and whole["merge_base_commit"]["sha"] == base
    assert {f["filename"] for f in whole["files"]} == {f.filename for f in SAMPLE_PR_FILES}
    same = client.get(f"/repos/acme/payments/compare/{new_head}...{new_head}").json()
    assert same["status"] == "identical" and same["files"] == []
    assert client.get(f"/repos/acme/payments/compare/{base}...{'0' * 40}").status_code == 404


def test_put_file_outside_the_diff(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.put_file("acme", "payments", ".pr-review.yml", "ignore: ['docs/**']\n", ref="main")
    data = client.get("/repos/acme/payments/contents/.pr-review.yml", params={"ref": "main"}).json()
    assert base64.b64decode(data["content"]) == b"ignore: ['docs/**']\n"
    assert all(f["filename"] != ".pr-review.yml" for f in client.get(PR + "/files").json())
    # Stored before any PR, a file is part of the base (and head) of PRs opened on that branch.
    gh.put_file("acme", "fresh", "setup.cfg", "[metadata]\n", ref="main")
    gh.add_pr("acme", "fresh", 1, [FakeFile("a.py", head="a = 1\n")])
    fresh = client.get("/repos/acme/fresh/pulls/1").json()
    for sha in (fresh["base"]["sha"], fresh["head"]["sha"]):
        assert client.get("/repos/acme/fresh/contents/setup.cfg", params={"ref": sha}).status_code == 200


def test_fault_on_one_method_only(gh: FakeGitHub, client: httpx.Client) -> None:
    gh.fail_next(1, status=422, match="/reviews", method="POST")
    assert client.get(PR + "/reviews").status_code == 200  # a GET is not the target
    rejected = client.post(PR + "/reviews", json={"body": "x", "event": "COMMENT"})
    assert rejected.status_code == 422 and rejected.json()["message"] == "Unprocessable Entity"
    assert client.post(PR + "/reviews", json={"body": "x", "event": "COMMENT"}).status_code == 200


def test_concurrent_comments_are_all_kept(gh: FakeGitHub) -> None:
    path, line = _defect("hardcoded-secret")
    statuses: list[int] = []

    def post(i: int) -> None:
        with httpx.Client(base_url=gh.url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            statuses.append(c.post(PR + "/comments", json={
                "body": f"c{i}", "commit_id": gh.head_sha("acme", "payments", 42), "path": path, "line": line,
            }).status_code)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 16
    comments = gh.posted_comments("acme", "payments", 42)
    assert sorted(c["body"] for c in comments) == sorted(f"c{i}" for i in range(16))
    assert len({c["id"] for c in comments}) == 16


# --- standalone ------------------------------------------------------------------------------------------
def test_runs_standalone() -> None:
    command = [sys.executable, "-m", "tests.fakes.github", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            first = process.stdout.readline()
            url = re.search(r"(http://127\.0\.0\.1:\d+)", first)
            assert url, first
            demo = process.stdout.readline()
            assert demo.strip().endswith("/acme/payments/pull/42")
            assert httpx.get(url.group(1) + PR, timeout=10).json()["number"] == 42
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        assert "RuntimeWarning" not in process.stderr.read()
