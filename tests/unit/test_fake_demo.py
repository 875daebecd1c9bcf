"""The demo's servers on their own: a read-only GitHub with the sample PR, the toy reviewer's API."""

from __future__ import annotations

import time

import httpx

from prreview.demo import DemoGitHub, DemoLLM, install_sample_pr
from prreview.demo.sample_pr import SAMPLE_PR_FILES
from tests.fakes import FakeGitHub, ScriptedLLM

PR = "/repos/acme/payments/pulls/42"


def test_the_demo_github_serves_the_reads_of_a_review() -> None:
    with DemoGitHub() as gh:
        url = install_sample_pr(gh)
        assert url == f"{gh.url}/acme/payments/pull/42"
        with httpx.Client(base_url=gh.url, timeout=10) as client:
            pr = client.get(PR).json()
            assert pr["head"]["sha"] == gh.head_sha("acme", "payments", 42)
            files = client.get(PR + "/files").json()
            assert [f["filename"] for f in files] == [f.filename for f in SAMPLE_PR_FILES]
            assert len(client.get(PR + "/commits").json()) == 3
            assert client.get(PR + "/reviews").json() == [] and client.get(PR + "/comments").json() == []
            base = pr["base"]["sha"]
            compare = client.get(f"/repos/acme/payments/compare/{base}...{pr['head']['sha']}").json()
            assert compare["status"] == "ahead" and compare["ahead_by"] == 3
            content = client.get("/repos/acme/payments/contents/payments/config.py", params={"ref": base})
            assert content.status_code == 200 and content.json()["type"] == "file"
            assert "invoice search" in client.get("/acme/payments/pull/42").text.lower()
            response = client.get(PR)
            assert response.headers["x-github-api-version-selected"] == "2022-11-28"
            assert "x-ratelimit-limit" not in response.headers  # rate limits are the test fake's


def test_the_demo_github_is_read_only() -> None:
    with DemoGitHub() as gh:
        install_sample_pr(gh)
        review = httpx.post(f"{gh.url}{PR}/reviews", json={"event": "COMMENT", "body": "hi"}, timeout=10)
        comment = httpx.post(f"{gh.url}{PR}/comments", json={"body": "hi"}, timeout=10)
        assert review.status_code == comment.status_code == 404
        assert httpx.get(f"{gh.url}/rate_limit", timeout=10).status_code == 404


def test_the_demo_llm_answers_as_the_toy_reviewer_after_its_latency() -> None:
    with DemoLLM(latency_s=0.3) as llm:
        started = time.monotonic()
        response = httpx.post(f"{llm.base_url}/chat/completions", timeout=10,
                              json={"model": "m", "messages": [{"role": "user", "content": "Say ok."}]})
        assert time.monotonic() - started >= 0.3
        assert response.json()["choices"][0]["message"]["content"] == "ok"
        assert httpx.get(f"{llm.base_url}/models", timeout=10).json()["data"][0]["id"] == "scripted-reviewer"
        assert httpx.post(f"{llm.base_url}/chat/completions", json={"model": "m"}, timeout=10).status_code == 400


def test_the_test_fakes_extend_the_demo_servers() -> None:
    assert issubclass(FakeGitHub, DemoGitHub) and issubclass(ScriptedLLM, DemoLLM)
