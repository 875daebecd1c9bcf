"""Triggered where PRs live: GitHub's signed deliveries, from a GitHub look-alike running as the
App's GitHub (installation tokens, bot authorship), against the real service."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg
import pytest

from serve_app.client import Client
from tests.helpers import add_pr, wait_for, wait_terminal
from tests.secure_stack import INSTALLATION, OPERATOR, WEBHOOK_SECRET, secure_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BOT = "pr-review[bot]"


@pytest.fixture
def secure(stacks):  # noqa: ANN001, ANN201 - pytest fixture
    stack = secure_stack(stacks)
    with Client(stack.api_url, api_key=OPERATOR[1]) as ops:
        stack.ops = ops
        yield stack


def deliver(stack, event: str, payload: dict, *, secret: str | None = WEBHOOK_SECRET, delivery_id=None):  # noqa: ANN001, ANN201
    return stack.github.deliver(f"{stack.api_url}/v1/github/webhook", event, payload, secret=secret,
                                delivery_id=delivery_id)


def pr_of(url: str) -> tuple[str, str, int]:
    owner, repo, _, number = url.rsplit("/", 4)[-4:]
    return owner, repo, int(number)


def reviews_started(stack) -> int:  # noqa: ANN001
    return len(stack.ops.list(limit=500))


def test_ping_answers_200(secure) -> None:
    response = deliver(secure, "ping", secure.github.ping_event(f"{secure.api_url}/v1/github/webhook"))
    assert response.status_code == 200 and response.json() == {"ignored": "ping"}


def test_a_forged_or_unsigned_delivery_is_refused_and_records_nothing(secure) -> None:
    owner, repo, number = pr_of(add_pr(secure.github))
    payload = secure.github.pull_request_event(owner, repo, number, "opened")
    before = reviews_started(secure)
    delivery = str(uuid.uuid4())
    for secret in ("not-the-secret", None):
        refused = deliver(secure, "pull_request", payload, secret=secret, delivery_id=delivery)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "invalid_signature"
    assert reviews_started(secure) == before
    # Nothing was recorded: the real delivery with that id is still taken.
    accepted = deliver(secure, "pull_request", payload, delivery_id=delivery)
    assert accepted.status_code == 202, accepted.text
    wait_terminal(secure.ops, accepted.json()["reviews"][0]["id"])


def test_a_malformed_delivery_is_a_400_and_records_nothing(secure) -> None:
    owner, repo, number = pr_of(add_pr(secure.github))
    delivery = str(uuid.uuid4())
    malformed = deliver(secure, "pull_request", {"action": "opened", "pull_request": {"number": number}},
                        delivery_id=delivery)
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "bad_request"
    accepted = deliver(secure, "pull_request", secure.github.pull_request_event(owner, repo, number, "opened"),
                       delivery_id=delivery)
    assert accepted.status_code == 202, accepted.text
    wait_terminal(secure.ops, accepted.json()["reviews"][0]["id"])


def test_deliveries_up_to_25_mb_are_taken_and_larger_ones_refused(secure) -> None:
    owner, repo, number = pr_of(add_pr(secure.github))
    payload = secure.github.pull_request_event(owner, repo, number, "opened")
    payload["pull_request"]["body"] = "A long description. " * 250_000  # 5 MB: far above the API's 64 KiB
    taken = deliver(secure, "pull_request", payload)
    assert taken.status_code == 202, taken.text
    before = reviews_started(secure)
    payload["pull_request"]["body"] = "x" * (26 * 1024 * 1024)
    refused = deliver(secure, "pull_request", payload)
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "payload_too_large"
    assert reviews_started(secure) == before
    assert wait_terminal(secure.ops, taken.json()["reviews"][0]["id"])["status"] == "succeeded"


def test_an_opened_pr_gets_one_published_review_and_a_redelivery_starts_nothing(secure) -> None:
    owner, repo, number = pr_of(add_pr(secure.github, files=2))
    payload = secure.github.pull_request_event(owner, repo, number, "opened")
    delivery = str(uuid.uuid4())
    response = deliver(secure, "pull_request", payload, delivery_id=delivery)
    assert response.status_code == 202, response.text
    job_id = response.json()["reviews"][0]["id"]
    done = wait_terminal(secure.ops, job_id)
    assert done["status"] == "succeeded", done["error"]
    assert done["options"]["post"] is True
    assert done["review"]["publication"]["status"] == "posted"

    again = deliver(secure, "pull_request", payload, delivery_id=delivery)
    assert again.status_code == 200 and again.json() == {"ignored": "redelivery"}
    assert [j["id"] for j in secure.ops.list(limit=500) if j["number"] == number] == [job_id]

    summaries = [c for c in secure.github.issue_comments(owner, repo, number) if c["user"]["login"] == BOT]
    assert len(summaries) == 1  # one summary comment, written by the App
    inline = [c for c in secure.github.posted_comments(owner, repo, number) if c["user"]["login"] == BOT]
    assert len(inline) == len(done["review"]["findings"]) > 0
    with psycopg.connect(secure.database_url) as conn:  # the job keeps the installation, never a token
        row = conn.execute("SELECT installation_id, submitted_by FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == (INSTALLATION, "github")


def test_drafts_closed_prs_and_bots_start_nothing(secure) -> None:
    owner, repo, number = pr_of(add_pr(secure.github))
    secure.github.add_pr(owner, repo, number, [], title="WIP", draft=True)
    before = reviews_started(secure)
    draft = deliver(secure, "pull_request", secure.github.pull_request_event(owner, repo, number, "opened"))
    assert draft.status_code == 200 and draft.json() == {"ignored": "the pull request is a draft"}
    by_bot = deliver(secure, "pull_request", secure.github.pull_request_event(
        owner, repo, number, "edited", sender="dependabot[bot]"))
    assert by_bot.status_code == 200 and "ignored" in by_bot.json()
    labelled = deliver(secure, "issues", {"action": "opened"})
    assert labelled.status_code == 200 and labelled.json() == {"ignored": "the 'issues' event starts nothing"}
    assert reviews_started(secure) == before
    ready = deliver(secure, "pull_request", secure.github.pull_request_event(owner, repo, number, "ready_for_review"))
    assert ready.status_code == 202
    wait_terminal(secure.ops, ready.json()["reviews"][0]["id"])
    closed = deliver(secure, "pull_request", secure.github.pull_request_event(owner, repo, number, "closed"))
    assert closed.status_code == 200 and "ignored" in closed.json()


def test_a_push_supersedes_the_running_review_and_the_summary_is_edited_in_place(secure) -> None:
    owner, repo, number = pr_of(add_pr(secure.github, files=2))
    secure.llm.latency_s = 3.0
    try:
        first = deliver(secure, "pull_request", secure.github.pull_request_event(owner, repo, number, "opened"))
        first_id = first.json()["reviews"][0]["id"]
        wait_for(lambda: secure.ops.get(first_id)["status"] == "running", timeout_s=60, what="the first review")
        secure.github.push(owner, repo, number, [], messages=["Fix the handler"])
        pushed = deliver(secure, "pull_request", secure.github.pull_request_event(owner, repo, number, "synchronize"))
        assert pushed.status_code == 202, pushed.text
        second_id = pushed.json()["reviews"][0]["id"]
        assert second_id != first_id
        superseded = wait_terminal(secure.ops, first_id, timeout_s=60)
        assert superseded["status"] == "cancelled"
    finally:
        secure.llm.latency_s = 0.0
    done = wait_terminal(secure.ops, second_id, timeout_s=120)
    assert done["status"] == "succeeded", done["error"]
    events = [e for e in secure.ops.events(first_id)]
    assert any(e["kind"] == "cancel_requested" and "superseded" in e.get("reason", "") for e in events)

    # A third review of the same PR edits the one summary comment; findings are posted once each.
    secure.github.push(owner, repo, number, [], messages=["Another push"])
    third = deliver(secure, "pull_request", secure.github.pull_request_event(owner, repo, number, "synchronize"))
    assert wait_terminal(secure.ops, third.json()["reviews"][0]["id"])["status"] == "succeeded"
    summaries = [c for c in secure.github.issue_comments(owner, repo, number) if c["user"]["login"] == BOT]
    assert len(summaries) == 1
    assert secure.github.head_sha(owner, repo, number)[:12] in summaries[0]["body"]
    inline = [c["body"] for c in secure.github.posted_comments(owner, repo, number) if c["user"]["login"] == BOT]
    assert len(inline) == len(set(inline))


def test_review_command_from_members_only(secure) -> None:
    owner, repo, number = pr_of(add_pr(secure.github))
    before = reviews_started(secure)
    outsider = deliver(secure, "issue_comment", secure.github.issue_comment_event(
        owner, repo, number, "/review", author="drive-by", author_association="CONTRIBUTOR"))
    assert outsider.status_code == 200 and "may not request reviews" in outsider.json()["ignored"]
    chatter = deliver(secure, "issue_comment", secure.github.issue_comment_event(
        owner, repo, number, "Looks good, but please /review later", author_association="MEMBER"))
    assert chatter.status_code == 200 and "ignored" in chatter.json()
    assert reviews_started(secure) == before
    member = deliver(secure, "issue_comment", secure.github.issue_comment_event(
        owner, repo, number, "/review\nplease", author="maintainer", author_association="MEMBER"))
    assert member.status_code == 202, member.text
    done = wait_terminal(secure.ops, member.json()["reviews"][0]["id"])
    assert done["status"] == "succeeded" and done["options"]["post"] is True


def test_installation_tokens_reach_no_log_no_event_no_row(secure) -> None:
    owner, repo, number = pr_of(add_pr(secure.github))
    response = deliver(secure, "pull_request", secure.github.pull_request_event(owner, repo, number, "opened"))
    wait_terminal(secure.ops, response.json()["reviews"][0]["id"])
    tokens = [t.token for t in secure.github.issued_app_tokens()]
    assert tokens, "the App issued no installation token"
    with psycopg.connect(secure.database_url) as conn:
        stored = " ".join(str(r) for table in ("jobs", "events", "checkpoint_blobs", "checkpoint_writes")
                          for r in conn.execute(f"SELECT * FROM {table}").fetchall())  # noqa: S608 - fixed names
    assert not any(token in stored for token in tokens)
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    leaked = [p.name for p in logs.rglob("*") if p.is_file()
              for token in tokens if re.search(re.escape(token), p.read_text(errors="ignore"))]
    assert leaked == []
