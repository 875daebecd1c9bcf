"""The page with API keys: a 401 asks for a key, every call (the event stream too) then carries it,
and the stream, read with fetch() to carry it, resumes from its last event id after a drop.

The service's own key checks are tested with the API; here the browser's routing stands in for a
service that wants PAGE_KEY, and passes what it lets through to the real stack with the stack's key.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, Route, expect

from prreview.config import load_settings
from serve_app.client import client_api_key
from tests.browser.test_review_page import add_sample_pr, submit, wait_for_state
from tests.stack import RunningStack

pytestmark = pytest.mark.browser

PAGE_KEY = "prk_browser-test-key"
UNAUTHORIZED = json.dumps({"error": {"code": "unauthorized", "message": "This API needs an API key."}})


def kinds(page: Page) -> list[str]:
    return page.locator("#events li").evaluate_all("els => els.map(e => e.dataset.kind)")


def sse_field(block: str, name: str) -> str:
    found = re.search(rf"^{name}: ?(\S+)", block, re.M)
    assert found, f"no {name}: in {block!r}"
    return found.group(1)


@pytest.mark.parametrize("api_key", [None])
def test_a_401_asks_for_a_key_then_every_call_carries_it(page: Page, stack: RunningStack, api_key: None) -> None:
    stack_key = client_api_key(load_settings())  # what the real stack wants, if anything
    calls: list[tuple[str, str | None]] = []

    def gate(route: Route) -> None:
        request = route.request
        sent = request.headers.get("authorization")
        calls.append((request.url, sent))
        if sent != f"Bearer {PAGE_KEY}":
            route.fulfill(status=401, body=UNAUTHORIZED,
                          headers={"Content-Type": "application/json", "WWW-Authenticate": "Bearer"})
            return
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        if stack_key:
            headers["authorization"] = f"Bearer {stack_key}"
        route.continue_(headers=headers)

    page.route(re.compile(r"/v1/"), gate)
    page.goto(stack.api_url + "/")

    # No key yet: a form asks for one (the recent list's call waits for it).
    dialog = page.locator("#api-key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#api-key-title")).to_have_text("An API key is needed")
    expect(dialog).to_contain_text("pr-review keys create NAME")
    page.fill("#api-key", "two words")
    page.click("#api-key-submit")
    expect(page.locator("#api-key-error")).to_have_text(re.compile("^An API key is letters, digits and punctuation"))
    # A key the service refuses: asked again, saying so.
    page.fill("#api-key", "prk_wrong")
    page.click("#api-key-submit")
    expect(page.locator("#api-key-title")).to_have_text("That API key was not accepted")
    page.fill("#api-key", PAGE_KEY)
    page.click("#api-key-submit")
    expect(dialog).to_have_count(0)
    expect(page.locator("#recent-note")).not_to_have_text(re.compile("Loading|Could not load"))
    assert page.evaluate("() => sessionStorage.getItem('pr-review.api-key')") == PAGE_KEY
    accepted_from = len(calls)

    # A review, submitted and followed live: every call carries the key, the event stream too.
    review_id = submit(page, stack.api_url, add_sample_pr(stack.github))
    wait_for_state(page, "v.status === 'succeeded'")
    assert kinds(page)[0] == "queued" and kinds(page)[-1] == "succeeded"
    later = calls[accepted_from:]
    assert any(url.endswith(f"/v1/reviews/{review_id}/events") for url, _ in later)
    assert all(sent == f"Bearer {PAGE_KEY}" for _, sent in later), later

    # The tab keeps its key: a reload asks nothing.
    page.reload()
    wait_for_state(page, "v.status === 'succeeded'")
    expect(dialog).to_have_count(0)


def test_a_dropped_stream_resumes_after_its_last_event(page: Page, stack: RunningStack) -> None:
    """The first connection delivers two events and ends (as a restart would end it); the page
    reconnects with Last-Event-ID and gets every later event once."""
    connections: list[dict[str, str]] = []
    full_kinds: list[str] = []
    cut_after: list[str] = []

    def events(route: Route) -> None:
        connections.append(dict(route.request.headers))
        if len(connections) > 1:
            route.continue_()
            return
        whole = route.fetch(timeout=120_000).text()  # the server ends the stream after the last event
        blocks = [b for b in re.split(r"\r?\n\r?\n", whole) if re.search(r"^data:", b, re.M)]
        full_kinds.extend(sse_field(b, "event") for b in blocks)
        cut_after.append(sse_field(blocks[1], "id"))
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"},
                      body="retry: 50\r\n\r\n" + "\r\n\r\n".join(blocks[:2]) + "\r\n\r\n")

    page.route(re.compile(r"/v1/reviews/[^/?]+/events$"), events)
    submit(page, stack.api_url, add_sample_pr(stack.github))
    wait_for_state(page, "v.status === 'succeeded'")
    page.wait_for_function(f"() => document.querySelectorAll('#events li').length >= {len(full_kinds) or 3}")

    assert len(connections) >= 2
    assert "last-event-id" not in connections[0]
    assert connections[1].get("last-event-id") == cut_after[0]
    assert kinds(page) == full_kinds


def test_the_stream_parser_reads_any_chunking(page: Page, stack: RunningStack) -> None:
    """stream.js's parser, fed one text in chunks of every size: the same events each time, with
    CRLF, CR and LF line ends, comments, multi-line data, ids kept across events, and `retry:`."""
    page.goto(stack.api_url + "/")
    result = page.evaluate("""async () => {
      const { SSEParser } = await import("./assets/stream.js");
      const text = "\\ufeff: ping\\r\\nid: 1\\r\\nevent: queued\\r\\ndata: {\\"kind\\":\\"queued\\"}\\r\\n\\r\\n"
        + "id: 2\\nevent: step\\ndata: a\\ndata: b\\n\\n: ping - later\\n\\nretry: 5000\\rdata:x\\r\\r"
        + "id: 3\\ndata: no blank line yet";
      const parse = (size) => {
        const events = [];
        const parser = new SSEParser((e) => events.push(e));
        for (let i = 0; i < text.length; i += size) parser.feed(text.slice(i, i + size));
        return { events, retryMs: parser.retryMs };
      };
      const whole = parse(text.length);
      const differing = [];
      for (let size = 1; size < text.length; size++) {
        if (JSON.stringify(parse(size)) !== JSON.stringify(whole)) differing.push(size);
      }
      return { whole, differing };
    }""")
    assert result["differing"] == []
    assert result["whole"]["retryMs"] == 5000
    assert result["whole"]["events"] == [
        {"type": "queued", "data": '{"kind":"queued"}', "lastEventId": "1"},
        {"type": "step", "data": "a\nb", "lastEventId": "2"},
        {"type": "message", "data": "x", "lastEventId": "2"},
    ]
