"""The fake GitHub's compare endpoint, repository files outside a PR, and method-matched faults."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.fakes import FakeFile, FakeGitHub


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as server:
        server.add_pr("acme", "shop", 1, [FakeFile("a.py", base="x = 1\n", head="x = 2\n")])
        yield server


def test_compare_lists_what_changed_between_two_pushes(gh: FakeGitHub) -> None:
    first = gh.head_sha("acme", "shop", 1)
    pushed = [FakeFile("b.py", head="y = 1\n"), FakeFile("logo.png", head=b"\x89PNG\0")]
    second = gh.push("acme", "shop", 1, pushed)
    data = httpx.get(f"{gh.url}/repos/acme/shop/compare/{first}...{second}").json()
    assert (data["status"], data["ahead_by"], data["behind_by"]) == ("ahead", 1, 0)
    files = {f["filename"]: f for f in data["files"]}
    assert set(files) == {"b.py", "logo.png"}  # a.py did not change in that push
    assert files["b.py"]["status"] == "added" and files["b.py"]["patch"] == "@@ -0,0 +1 @@\n+y = 1"
    assert "patch" not in files["logo.png"]  # binary, as GitHub
    assert [c["sha"] for c in data["commits"]] == [second]
    back = httpx.get(f"{gh.url}/repos/acme/shop/compare/{second}...{first}").json()
    assert back["status"] == "behind" and back["files"] == []
    same = httpx.get(f"{gh.url}/repos/acme/shop/compare/{second}...{second}").json()
    assert same["status"] == "identical"
    assert httpx.get(f"{gh.url}/repos/acme/shop/compare/{'0' * 40}...{second}").status_code == 404


def test_files_outside_any_pr_are_served_at_their_ref(gh: FakeGitHub) -> None:
    base = httpx.get(f"{gh.url}/repos/acme/shop/pulls/1").json()["base"]["sha"]
    gh.put_file("acme", "shop", ".pr-review.toml", "min_severity = 'major'\n", ref=base)
    found = httpx.get(f"{gh.url}/repos/acme/shop/contents/.pr-review.toml", params={"ref": base})
    assert found.status_code == 200 and found.json()["type"] == "file"
    head = gh.head_sha("acme", "shop", 1)
    at_head = httpx.get(f"{gh.url}/repos/acme/shop/contents/.pr-review.toml", params={"ref": head})
    assert at_head.status_code == 404


def test_faults_can_target_one_method(gh: FakeGitHub) -> None:
    gh.fail_next(1, status=422, match="/pulls/1/reviews", method="POST")
    assert httpx.get(f"{gh.url}/repos/acme/shop/pulls/1/reviews").status_code == 200
    refused = httpx.post(f"{gh.url}/repos/acme/shop/pulls/1/reviews", json={"event": "COMMENT", "body": "x"})
    assert refused.status_code == 422 and "must be part of the diff" in refused.json()["errors"][0]
    again = httpx.post(f"{gh.url}/repos/acme/shop/pulls/1/reviews", json={"event": "COMMENT", "body": "x"})
    assert again.status_code == 200
