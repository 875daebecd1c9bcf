"""Turning a submitted PR URL into a job: validation, idempotency, the queue bound."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from graph.github import GitHubClient
from prreview.config import Settings
from prreview.errors import PRReviewError, QueueFull
from prreview.models import ReviewOptions
from prreview.store import JobStore, NewJob, Row
from prreview.urls import PRRef, canonical_pr_url, parse_pr_url

log = logging.getLogger(__name__)

HEAD_LOOKUP_TIMEOUT_S = 2.0
QUEUE_FULL_RETRY_AFTER_S = 10.0


@dataclass(frozen=True)
class Submitted:
    row: Row
    created: bool


class Submissions:
    def __init__(self, settings: Settings, store: JobStore, github: GitHubClient) -> None:
        self.settings, self.store, self.github = settings, store, github

    def new_job(self, pr_url: str, options: ReviewOptions) -> NewJob:
        ref = parse_pr_url(pr_url, web_host=self.settings.github_web_host)
        scheme = "http" if self.settings.github_api_url.startswith("http://") else "https"
        return NewJob(pr_url=canonical_pr_url(ref, web_host=self.settings.github_web_host, scheme=scheme),
                      repo=ref.full_name, number=ref.number, options=options.model_dump(mode="json"))

    async def submit(self, pr_url: str, options: ReviewOptions) -> Submitted:
        """The job reviewing this PR: an existing one when the same review is queued, running, or
        succeeded at the PR's current head; else a new queued job. Raises QueueFull."""
        job = self.new_job(pr_url, options)
        existing = await self.store.find_reusable_job(job)
        if existing is not None and existing["status"] != "succeeded":
            return Submitted(existing, created=False)
        if existing is not None and existing["head_sha"] and await self._current_head(job) == existing["head_sha"]:
            return Submitted(existing, created=False)
        row = await self.store.insert_job(job, max_queued=self.settings.max_queued_jobs)
        if row is not None:
            return Submitted(row, created=True)
        active = await self.store.find_active_job(job)  # lost a race to an identical submit
        if active is not None:
            return Submitted(active, created=False)
        raise QueueFull(f"The review queue is full ({self.settings.max_queued_jobs} waiting); try again later.",
                        retry_after_s=QUEUE_FULL_RETRY_AFTER_S)

    async def _current_head(self, job: NewJob) -> str | None:
        """The PR's head commit, asked of GitHub only when a finished review could be reused;
        bounded, since the ingress must stay fast (no answer -> a new review)."""
        owner, repo = job.repo.split("/", 1)
        try:
            return await asyncio.wait_for(self.github.head_sha(PRRef(owner, repo, job.number)),
                                          HEAD_LOOKUP_TIMEOUT_S)
        except (PRReviewError, TimeoutError) as exc:
            log.info("head lookup for %s#%s failed: %s", job.repo, job.number, exc)
            return None


def error_item(exc: PRReviewError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message}
