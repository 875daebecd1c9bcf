"""The web page in headless Chromium against a real local stack (Ray Serve, Postgres, fake GitHub,
scripted LLM): submit, live progress, reload, errors, cancel, batches, and HTML injection."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from prreview.demo.sample_pr import SAMPLE_PR_BODY, SAMPLE_PR_FILES, SAMPLE_PR_TITLE
from tests.fakes import FakeFile, FakeGitHub, ScriptedLLM
from tests.stack import RunningStack

pytestmark = pytest.mark.browser

LLM_LATENCY_S = 2.5  # per model call: long enough to watch each step, short enough for a fast suite
_numbers = itertools.count(4201)  # one PR per test: a PR reviewed before would be answered from cache


def add_sample_pr(github: FakeGitHub, *, title: str = SAMPLE_PR_TITLE) -> str:
    number = next(_numbers)
    github.add_pr("acme", "payments", number, SAMPLE_PR_FILES, title=title, body=SAMPLE_PR_BODY,
                  commits=["Add invoice search endpoint", "Back off between webhook retries"],
                  head_ref="feature/invoice-search")
    return github.pr_url("acme", "payments", number)


@pytest.fixture
def llm(stack: RunningStack) -> Iterator[ScriptedLLM]:
    """The stack's scripted LLM, slowed down; latency and responder are restored afterwards."""
    saved = stack.llm.latency_s, stack.llm.responder
    stack.llm.latency_s = LLM_LATENCY_S
    yield stack.llm
    stack.llm.latency_s, stack.llm.responder = saved


def view_state(page: Page) -> dict[str, str]:
    return page.evaluate("() => ({...(document.querySelector('#review-view')?.dataset || {})})")


def wait_for_state(page: Page, condition: str) -> None:
    """Wait until `condition`, a JS expression over `v` (the review view's data attributes), holds."""
    page.wait_for_function(f"() => {{ const v = document.querySelector('#review-view')?.dataset; "
                           f"return !!v && ({condition}); }}")


def submit(page: Page, base_url: str, pr_url: str) -> str:
    page.goto(base_url + "/")
    page.fill("#pr-url", pr_url)
    page.click("#submit")
    page.wait_for_url(re.compile(r"\?review="))
    return page.url.split("?review=", 1)[1]


def test_submit_shows_live_progress_then_the_rendered_review(page: Page, stack: RunningStack,
                                                             llm: ScriptedLLM, artifacts: Path) -> None:
    pr_url = add_sample_pr(stack.github)
    review_id = submit(page, stack.api_url, pr_url)

    # Progress moves while it runs: the files are being reviewed and a model call is under way ...
    wait_for_state(page, "v.status === 'running' && v.step === 'review' && Number(v.llmCalls) >= 1")
    expect(page.locator("#review-status")).to_have_text("Running")
    expect(page.locator("#step")).to_have_text("Reviewing the changed files")
    assert view_state(page)["filesDone"] == "0"
    page.screenshot(path=str(artifacts / "review-running.png"), full_page=True)
    expect(page.locator("#files")).to_have_text(re.compile(r"^0 of \d+ files reviewed$"))
    expect(page.locator("#cancel")).to_be_visible()
    # ... then every file is done and the summary is being written, still running.
    wait_for_state(page, "v.status === 'running' && Number(v.filesDone) > 0 "
                         "&& Number(v.filesDone) === Number(v.filesTotal)")
    assert int(page.locator("#prompt-tokens").inner_text().replace(",", "")) > 0

    wait_for_state(page, "v.status === 'succeeded'")
    job = stack.api.get(review_id)
    review = job["review"]
    expect(page.locator("#review-title")).to_have_text(f"acme/payments #{job['number']}")
    expect(page.locator("#review-status")).to_have_text("Succeeded")
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#llm-calls")).to_have_text(str(job["usage"]["llm_calls"]))
    expect(page.locator("#verdict")).to_have_text({"approve": "Approve", "comment": "Comment",
                                                   "request_changes": "Changes requested"}[review["verdict"]])
    shown = page.locator("#summary .summary-text").all_inner_texts()
    assert shown == [p.strip().replace("`", "") for p in review["summary"].split("\n\n") if p.strip()]

    # Findings grouped by file, each with its severity, a line link into the PR and its suggestion.
    paths = {f["path"] for f in review["findings"]}
    assert review["findings"], "the sample PR has planted defects"
    assert set(page.locator("#findings .file").evaluate_all("els => els.map(e => e.dataset.path)")) == paths
    for finding in review["findings"]:
        card = page.locator(f'#findings .file[data-path="{finding["path"]}"] .finding').filter(
            has=page.locator(".finding-title", has_text=finding["title"].replace("`", ""))).filter(
            has=page.locator(".line-link", has_text=re.compile(rf"\blines? {finding['line']}\b"))).first
        expect(card.locator(".sev")).to_have_text(finding["severity"].capitalize())
        anchor = rf"^{re.escape(job['pr_url'])}/files#diff-[0-9a-f]{{64}}[RL]{finding['line']}$"
        expect(card.locator(".line-link")).to_have_attribute("href", re.compile(anchor))
        if finding.get("suggestion"):
            expect(card.locator(".suggestion pre code")).to_have_text(finding["suggestion"])
    # Skipped files with their reasons (the sample PR's PNG is binary).
    assert review["files_skipped"]
    for skipped in review["files_skipped"]:
        expect(page.locator("#skipped tr", has_text=skipped["path"])).to_contain_text(skipped["reason"])
    kinds = page.locator("#events li").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds[0] == "queued" and kinds[-1] == "succeeded" and "group_done" in kinds

    page.locator("#progress details.activity").evaluate("el => el.open = false")
    page.screenshot(path=str(artifacts / "review-finished.png"), full_page=True)


def test_reload_mid_review_resumes_the_stream(page: Page, stack: RunningStack, llm: ScriptedLLM) -> None:
    review_id = submit(page, stack.api_url, add_sample_pr(stack.github))
    wait_for_state(page, "v.status === 'running' && v.step === 'review'")

    page.reload()
    assert page.url.endswith(f"?review={review_id}")
    wait_for_state(page, "v.status === 'running'")
    wait_for_state(page, "v.status === 'succeeded'")
    expect(page.locator("#review .finding").first).to_be_visible()
    # The reloaded page replayed the stream once, from the start, and followed it to the end.
    kinds = page.locator("#events li").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds.count("queued") == 1 and kinds.count("started") == 1 and kinds.count("succeeded") == 1
    assert stack.api.get(review_id)["status"] == "succeeded"


def test_a_bad_url_is_explained_in_a_sentence(page: Page, stack: RunningStack) -> None:
    page.goto(stack.api_url + "/")
    page.fill("#pr-url", "https://gitlab.example/acme/payments/pull/1")
    page.click("#submit")
    error = page.locator("#submit-error")
    expect(error).to_be_visible()
    expect(error).to_have_text(
        re.compile(r"^Only pull requests on \S+ can be reviewed here, not on gitlab\.example\.$"))

    page.fill("#pr-url", "not a link")
    page.click("#submit")
    expect(error).to_have_text(re.compile(r"is not .*URL"))
    assert "{" not in error.inner_text()
    assert "?review=" not in page.url


def test_a_full_queue_says_when_to_retry(page: Page, stack: RunningStack) -> None:
    """The API's 503 queue_full answer (faked in the browser: filling the real queue would need a
    second stack) reads as a sentence with the Retry-After time."""
    def queue_full(route: Route) -> None:
        route.fulfill(status=503, headers={"Retry-After": "10", "Content-Type": "application/json"},
                      body=json.dumps({"error": {"code": "queue_full", "message":
                                       "The review queue is full (500 waiting); try again later."}}))

    page.route(re.compile(r"/v1/reviews$"), queue_full)
    page.goto(stack.api_url + "/")
    page.fill("#pr-url", add_sample_pr(stack.github))
    page.click("#submit")
    expect(page.locator("#submit-error")).to_have_text(
        "The review queue is full (500 waiting); try again later. Retry in 10 seconds.")


def test_a_failed_review_shows_its_reason_and_code(page: Page, stack: RunningStack) -> None:
    missing = stack.github.pr_url("acme", "payments", 99_999)  # GitHub answers 404
    submit(page, stack.api_url, missing)
    wait_for_state(page, "v.status === 'failed'")
    failure = page.locator("#failure")
    expect(failure).to_contain_text("The review failed")
    expect(failure).to_contain_text("Error code: pr_not_found.")
    expect(page.locator("#review-status")).to_have_text("Failed")
    expect(page.locator("#events li").last).to_have_attribute("data-kind", "failed")


def test_cancel_stops_a_running_review(page: Page, stack: RunningStack, llm: ScriptedLLM) -> None:
    llm.latency_s = 30.0  # the first model call would outlast the test
    review_id = submit(page, stack.api_url, add_sample_pr(stack.github))
    wait_for_state(page, "v.status === 'running' && Number(v.llmCalls) >= 1")
    page.click("#cancel")
    wait_for_state(page, "v.status === 'cancelled'")
    expect(page.locator("#cancelled")).to_contain_text("The review was cancelled.")
    expect(page.locator("#cancel")).to_be_hidden()
    assert stack.api.get(review_id)["status"] == "cancelled"


def test_batch_view_follows_each_review_and_recent_lists_them(page: Page, stack: RunningStack,
                                                               llm: ScriptedLLM) -> None:
    llm.latency_s = 1.0
    urls = [add_sample_pr(stack.github), add_sample_pr(stack.github), "https://elsewhere.example/a/b/pull/1"]
    page.goto(stack.api_url + "/")
    page.fill("#batch-urls", "\n".join(urls))
    page.click("#batch-submit")
    page.wait_for_url(re.compile(r"\?batch="))

    rows = page.locator("#batch-rows tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(2)).to_have_attribute("data-status", "rejected")
    expect(rows.nth(2)).to_contain_text("Only pull requests on")
    # Each accepted review's status moves on its own until the batch is done.
    page.wait_for_function("() => [...document.querySelectorAll('#batch-rows tr')]"
                           ".some(r => ['queued', 'running'].includes(r.dataset.status))")
    page.wait_for_selector("#batch-view[data-done='true']")
    expect(rows.nth(0)).to_have_attribute("data-status", "succeeded")
    expect(rows.nth(1)).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#batch-counts")).to_contain_text("2 succeeded")
    expect(page.locator("#batch-counts")).to_contain_text("1 rejected")
    ids = rows.evaluate_all("els => els.map(e => e.dataset.id).filter(Boolean)")

    page.click("text=← New review")
    for review_id in ids:
        row = page.locator(f'#recent-rows tr[data-id="{review_id}"]')
        expect(row).to_have_attribute("data-status", "succeeded")

    page.locator(f'#recent-rows tr[data-id="{ids[0]}"] a').click()
    page.wait_for_url(re.compile(rf"\?review={ids[0]}$"))
    wait_for_state(page, "v.status === 'succeeded'")
    expect(page.locator("#review")).to_be_visible()


INJECTION = '<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned = \'img\'">'


def injecting_responder(request: dict[str, Any]) -> dict[str, Any]:
    """A model that answers with markup everywhere the page shows its text."""
    schema = request["response_format"]["json_schema"]
    prompt = "\n".join(str(m.get("content")) for m in request["messages"] if m.get("role") == "user")
    if schema["name"] == "group_review":
        return {"findings": [{
            "path": "app/views.py", "line": 2, "end_line": None, "side": "RIGHT", "severity": "major",
            "category": "<b>xss</b>", "title": INJECTION, "body": f"Body {INJECTION} <i>end</i>",
            "suggestion": f"</code></pre>{INJECTION}"}]}
    title = re.findall(r"<pr_title>(.*?)</pr_title>", prompt, re.S)[-1]
    return {"summary": f"PR title: {title}", "verdict": "comment"}


def test_html_in_pr_and_model_text_renders_as_text(page: Page, stack: RunningStack, llm: ScriptedLLM) -> None:
    llm.latency_s = 0.2
    llm.responder = injecting_responder
    number = next(_numbers)
    stack.github.add_pr("acme", "payments", number, [FakeFile("app/views.py", base="a = 1\n",
                                                              head="a = 1\nb = 2\n")], title=INJECTION)
    submit(page, stack.api_url, stack.github.pr_url("acme", "payments", number))
    wait_for_state(page, "v.status === 'succeeded'")

    expect(page.locator("#summary")).to_have_text(f"PR title: {INJECTION}")  # echoed by the model
    finding = page.locator("#findings .finding").first
    expect(finding.locator(".finding-title")).to_have_text(INJECTION)
    expect(finding.locator(".finding-body")).to_have_text(f"Body {INJECTION} <i>end</i>")
    expect(finding.locator(".suggestion code")).to_have_text(f"</code></pre>{INJECTION}")
    expect(finding.locator(".finding-meta")).to_contain_text("<b>xss</b>")
    assert page.locator("#main img, #main script, #main b, #main i").count() == 0
    assert page.evaluate("window.__pwned") is None

