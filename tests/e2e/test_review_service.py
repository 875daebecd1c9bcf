"""The durable review service end to end: real Ray Serve, real Postgres, fake GitHub, scripted LLM."""

from __future__ import annotations

import json

import pytest

from prreview.demo import install_sample_pr
from tests.helpers import add_pr, assert_findings_on_diff, wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_submit_answers_202_and_review_succeeds_with_anchored_findings(stack) -> None:
    pr_url = install_sample_pr(stack.github)
    response = stack.http.post(f"{stack.api_url}/v1/reviews", json={"pr_url": pr_url, "options": {"max_nits": 2}})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert response.headers["location"] == f"/v1/reviews/{job['id']}"

    done = wait_terminal(stack.api, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1
    assert done["head_sha"] == stack.github.head_sha("acme", "payments", 42)
    review = done["review"]
    assert review["verdict"] == "request_changes"
    assert {f["severity"] for f in review["findings"]} >= {"critical", "major"}
    assert_findings_on_diff(stack.github, done)
    assert [s["path"] for s in review["files_skipped"]] == ["docs/img/invoice-search.png"]
    assert done["progress"] == {"step": "done", "files_total": 4, "files_done": 4}
    completed = [c for c in stack.llm.requests if c.outcome == "completed"]
    assert done["usage"]["llm_calls"] == len(stack.llm.requests) == 2
    assert done["usage"]["prompt_tokens"] == sum(c.usage["prompt_tokens"] for c in completed)
    assert done["usage"]["completion_tokens"] == sum(c.usage["completion_tokens"] for c in completed)


def test_resubmitting_the_same_pr_returns_the_same_review(stack) -> None:
    pr_url = add_pr(stack.github)
    first = stack.http.post(f"{stack.api_url}/v1/reviews", json={"pr_url": pr_url})
    again = stack.http.post(f"{stack.api_url}/v1/reviews", json={"pr_url": pr_url})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    wait_terminal(stack.api, first.json()["id"])
    calls = len(stack.llm.requests)

    after = stack.http.post(f"{stack.api_url}/v1/reviews", json={"pr_url": pr_url})
    assert after.status_code == 200 and after.json()["id"] == first.json()["id"]
    other_options = stack.http.post(f"{stack.api_url}/v1/reviews", json={"pr_url": pr_url, "options": {"max_nits": 0}})
    assert other_options.status_code == 202 and other_options.json()["id"] != first.json()["id"]
    wait_terminal(stack.api, other_options.json()["id"])
    assert len(stack.llm.requests) > calls  # only the new options cost LLM calls

    owner, repo, _, number = pr_url.rsplit("/", 4)[-4:]
    stack.github.push(owner, repo, int(number), [])  # a new head commit: a new review
    pushed = stack.http.post(f"{stack.api_url}/v1/reviews", json={"pr_url": pr_url})
    assert pushed.status_code == 202 and pushed.json()["id"] != first.json()["id"]
    wait_terminal(stack.api, pushed.json()["id"])


BAD_SUBMITS = [
    ("not json", b"{nope", 400, "invalid_json"),
    ("array body", b"[1]", 400, "invalid_json"),
    ("missing url", b"{}", 400, "bad_request"),
    ("unknown option", b'{"pr_url": "PR", "options": {"yolo": true}}', 400, "bad_request"),
    ("foreign host", b'{"pr_url": "https://evil.example/acme/shop/pull/1"}', 400, "foreign_host"),
    ("metadata host", b'{"pr_url": "http://169.254.169.254/acme/shop/pull/1"}', 400, "foreign_host"),
    ("issue not pr", b'{"pr_url": "HOST/acme/shop/issues/1"}', 400, "invalid_pr_url"),
    ("no number", b'{"pr_url": "HOST/acme/shop/pull/x"}', 400, "invalid_pr_url"),
    ("scheme", b'{"pr_url": "ftp://HOSTNAME/acme/shop/pull/1"}', 400, "invalid_pr_url"),
    ("credentials", b'{"pr_url": "http://user:pw@HOSTNAME/acme/shop/pull/1"}', 400, "invalid_pr_url"),
]


@pytest.mark.parametrize(("name", "body", "status", "code"), BAD_SUBMITS, ids=[b[0] for b in BAD_SUBMITS])
def test_bad_submissions_get_a_clear_error_and_create_nothing(stack, name, body, status, code) -> None:
    host = stack.github.url
    body = body.replace(b"HOSTNAME", host.split("//", 1)[1].encode()).replace(b"HOST", host.encode())
    body = body.replace(b'"PR"', json.dumps(stack.github.pr_url("acme", "shop", 1)).encode())
    before = stack.api.list(limit=500)
    response = stack.http.post("/v1/reviews", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert len(stack.api.list(limit=500)) == len(before)
    assert not any("evil" in r.path or "169.254" in r.path for r in stack.github.requests)


def test_oversized_body_is_refused_with_413(stack) -> None:
    response = stack.http.post(f"{stack.api_url}/v1/reviews", content=b"{" + b" " * 70_000 + b"}",
                          headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/reviews/00000000-0000-0000-0000-000000000000", 404, "not_found"),
    ("GET", "/v1/reviews/not-a-uuid", 404, "not_found"),
    ("GET", "/v1/reviews/not-a-uuid/events", 404, "not_found"),
    ("DELETE", "/v1/reviews/00000000-0000-0000-0000-000000000000", 404, "not_found"),
    ("GET", "/v1/batches/00000000-0000-0000-0000-000000000000", 404, "not_found"),
    ("GET", "/v1/reviews?status=bogus", 400, "bad_request"),
    ("GET", "/v1/reviews?limit=0", 400, "bad_request"),
    ("GET", "/v1/nothing-here", 404, "not_found"),
    ("PUT", "/v1/reviews", 405, "method_not_allowed"),
])
def test_unknown_resources_and_bad_queries_use_the_error_shape(stack, method, path, status, code) -> None:
    response = stack.http.request(method, f"{stack.api_url}{path}")
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_unknown_pr_fails_the_job_with_its_own_code(stack) -> None:
    job = stack.api.submit(stack.github.pr_url("acme", "shop", 99_999))
    done = wait_terminal(stack.api, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "pr_not_found"
    assert done["usage"]["llm_calls"] == 0


def test_github_rate_limit_is_waited_out_within_its_bound(stack) -> None:
    pr_url = add_pr(stack.github)
    stack.github.rate_limit_next(1, kind="primary", reset_in_s=1)
    done = wait_terminal(stack.api, stack.api.submit(pr_url)["id"])
    assert done["status"] == "succeeded", done["error"]


def test_github_rate_limit_beyond_the_bound_fails_clearly(stack) -> None:
    pr_url = add_pr(stack.github)
    stack.github.rate_limit_next(1, kind="secondary", reset_in_s=3600)
    done = wait_terminal(stack.api, stack.api.submit(pr_url)["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "github_rate_limited"
    assert "rate limit" in done["error"]["message"]


def test_llm_errors_are_retried_then_fail_the_job(stack) -> None:
    pr_url = add_pr(stack.github)
    stack.llm.fail_next(10, status=500)
    done = wait_terminal(stack.api, stack.api.submit(pr_url)["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "llm_error"
    assert len(stack.llm.requests) == 2  # one call, one bounded retry (PR_REVIEW_LLM_MAX_RETRIES=1)
    assert done["usage"]["llm_calls"] == 2


def test_llm_timeout_fails_the_job_and_aborts_the_request(stack) -> None:
    pr_url = add_pr(stack.github)
    stack.llm.hang_next(10)
    done = wait_terminal(stack.api, stack.api.submit(pr_url)["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "llm_timeout", done["error"]
    assert stack.llm.wait_until(lambda llm: llm.aborted == 2 and llm.in_flight == 0)


def test_events_stream_resumes_from_last_event_id_and_ends_after_the_terminal_event(stack) -> None:
    job = stack.api.submit(add_pr(stack.github))
    events = list(stack.api.events(job["id"]))
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "queued" and kinds[-1] == "succeeded"
    assert {"started", "fetched", "planned", "group_done"} <= set(kinds)

    with stack.http.stream("GET", f"{stack.api_url}/v1/reviews/{job['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        ids = [line.split(":", 1)[1].strip() for line in response.iter_lines() if line.startswith("id:")]
    assert len(ids) == len(events)
    replay = list(stack.api.events(job["id"], last_event_id=ids[2]))
    assert [e["kind"] for e in replay] == kinds[3:]


def test_list_is_newest_first_and_filters_by_status(stack) -> None:
    first = stack.api.submit(add_pr(stack.github))
    second = stack.api.submit(add_pr(stack.github))
    wait_terminal(stack.api, first["id"])
    wait_terminal(stack.api, second["id"])
    items = stack.api.list(status="succeeded", limit=2)
    assert [i["id"] for i in items] == [second["id"], first["id"]]
    assert all(i["status"] == "succeeded" for i in stack.api.list(status="succeeded", limit=50))


def test_batch_submits_each_pr_and_reports_bad_lines(stack) -> None:
    good = [add_pr(stack.github), add_pr(stack.github)]
    batch = stack.api.submit_batch(good + ["https://evil.example/a/b/pull/1"])
    assert [("id" in r, "error" in r) for r in batch["reviews"]] == [(True, False), (True, False), (False, True)]
    assert batch["reviews"][2]["error"]["code"] == "foreign_host"
    for review in batch["reviews"][:2]:
        wait_terminal(stack.api, review["id"])
    summary = stack.api.batch(batch["id"])
    assert summary["counts"] == {"succeeded": 2, "rejected": 1}


def test_health_and_readiness(stack) -> None:
    assert stack.http.get(f"{stack.api_url}/healthz").json() == {"status": "ok"}
    ready = stack.http.get(f"{stack.api_url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
