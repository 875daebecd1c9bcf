"""The GitHub client against the fake GitHub: reads are retried, writes are sent once, and a rate
limit is waited out within the job's deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from graph.github import GitHubClient, GitHubNotSent, GitHubWriteUncertain, github_wait_budget
from prreview.demo import FakeFile
from prreview.errors import GitHubRateLimited
from prreview.urls import PRRef
from tests.fakes import FakeGitHub

pytestmark = pytest.mark.timeout(60)
REF = PRRef("acme", "shop", 7)


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        fake.add_pr("acme", "shop", 7, [FakeFile("a.py", head="x = 1\n")])
        yield fake


@pytest.fixture
async def client(github: FakeGitHub) -> AsyncIterator[GitHubClient]:
    client = GitHubClient(github.url, "ghp_test", rate_limit_max_wait_s=0)  # no wait at all outside a scope
    yield client
    await client.aclose()


def _sent(github: FakeGitHub, method: str, fragment: str) -> list[int | None]:
    return [r.status for r in github.requests if r.method == method and fragment in r.path]


async def test_a_read_answered_502_is_retried(github: FakeGitHub, client: GitHubClient) -> None:
    github.fail_next(2, status=502, match="/pulls/7", method="GET")
    assert await client.head_sha(REF) == github.head_sha("acme", "shop", 7)
    assert _sent(github, "GET", "/pulls/7") == [502, 502, 200]


async def test_a_write_answered_502_is_sent_once(github: FakeGitHub, client: GitHubClient) -> None:
    github.fail_after_write_next(1, status=502, match="/issues/7/comments", method="POST")
    with pytest.raises(GitHubWriteUncertain):
        await client.create_issue_comment(REF, "hello")
    assert _sent(github, "POST", "/issues/7/comments") == [502]
    assert [c["body"] for c in github.issue_comments("acme", "shop", 7)] == ["hello"]  # GitHub did it


async def test_a_write_that_never_reached_github_is_sent_again() -> None:
    client = GitHubClient("http://127.0.0.1:9", "ghp_test", transient_attempts=2)  # nothing listens there
    try:
        with pytest.raises(GitHubNotSent):
            await client.create_issue_comment(REF, "hello")
    finally:
        await client.aclose()


async def test_without_a_scope_the_configured_wait_applies(github: FakeGitHub, client: GitHubClient) -> None:
    github.rate_limit_next(1, kind="secondary", reset_in_s=1, match="/pulls/7")
    with pytest.raises(GitHubRateLimited, match="longer than the 0 s pr-review waits"):
        await client.head_sha(REF)


async def test_a_reset_before_the_deadline_is_waited_out(github: FakeGitHub, client: GitHubClient) -> None:
    github.rate_limit_next(1, kind="secondary", reset_in_s=1, match="/pulls/7")
    with github_wait_budget(time.monotonic() + 600):
        # a task started in the scope (as LangGraph starts its nodes) inherits it
        sha = await asyncio.create_task(client.head_sha(REF))
    assert sha == github.head_sha("acme", "shop", 7)
    assert _sent(github, "GET", "/pulls/7") == [429, 200]


async def test_a_reset_after_the_deadline_fails_at_once(github: FakeGitHub, client: GitHubClient) -> None:
    github.rate_limit_next(1, kind="primary", reset_in_s=3600, match="/pulls/7")
    deadline = time.monotonic() + 120
    with github_wait_budget(deadline), pytest.raises(GitHubRateLimited, match="after the review's deadline") as info:
        await client.head_sha(REF)
    assert info.value.code == "github_rate_limited"
    assert _sent(github, "GET", "/pulls/7") == [403]  # no wait, no second try
