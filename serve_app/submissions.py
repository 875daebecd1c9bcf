"""Turning submitted PR URLs into jobs: validation, idempotency, the queue bound."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from graph.github import GitHubClient
from prreview.access import Principal, QuotaExceeded
from prreview.config import Settings
from prreview.errors import PRReviewError, QueueFull
from prreview.lifecycle import BatchEntry, Lifecycle
from prreview.models import ReviewOptions
from prreview.store import Job, JobStore, NewJob
from prreview.urls import PRRef, canonical_pr_url, parse_pr_url
from serve_app.webhooks import ReviewRequest

log = logging.getLogger(__name__)

GITHUB_SUBMITTER = "github"  # what webhook-made jobs record as their submitter
HEAD_LOOKUP_TIMEOUT_S = 2.0
HEAD_LOOKUPS_AT_ONCE = 8
QUEUE_FULL_RETRY_AFTER_S = 10.0


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool


class Submissions:
    def __init__(self, settings: Settings, store: JobStore, lifecycle: Lifecycle, github: GitHubClient) -> None:
        self.settings, self.store, self.lifecycle, self.github = settings, store, lifecycle, github

    def new_job(self, pr_url: str, options: ReviewOptions, submitted_by: str) -> NewJob:
        """Raises InvalidPRURL or ForeignHost before anything is fetched."""
        return self._job_of(parse_pr_url(pr_url, web_host=self.settings.github_web_host), options, submitted_by)

    def _job_of(self, ref: PRRef, options: ReviewOptions, submitted_by: str, **github: Any) -> NewJob:
        scheme = "http" if self.settings.github_api_url.startswith("http://") else "https"
        return NewJob(pr_url=canonical_pr_url(ref, web_host=self.settings.github_web_host, scheme=scheme),
                      repo=ref.full_name, number=ref.number, options=options.model_dump(mode="json"),
                      submitted_by=submitted_by, **github)

    def _queue_full(self) -> QueueFull:
        return QueueFull(f"The review queue is full ({self.settings.max_queued_jobs} waiting); try again later.",
                         retry_after_s=QUEUE_FULL_RETRY_AFTER_S)

    async def submit(self, pr_url: str, options: ReviewOptions, principal: Principal) -> Submitted:
        """The job reviewing this PR for this caller: an existing one when the same review is
        queued, running, or succeeded at the PR's current head; else a new queued job. Raises
        QueueFull, or QuotaExceeded when the caller's key is over one of its quotas."""
        job = self.new_job(pr_url, options, principal.submitter)
        existing = await self.store.find_reusable_job(job)
        if existing is not None and not existing.status.terminal:
            return Submitted(existing, created=False)
        if existing is not None and existing.head_sha and await self._current_head(job) == existing.head_sha:
            return Submitted(existing, created=False)
        created = await self.lifecycle.submit(job, max_queued=self.settings.max_queued_jobs, quota=principal.quota)
        if created is not None:
            return Submitted(created, created=True)
        active = await self.store.find_active_job(job)  # lost a race to an identical submit
        if active is not None:
            return Submitted(active, created=False)
        await self._check_quota(principal)
        raise self._queue_full()

    async def _check_quota(self, principal: Principal) -> None:
        quota = principal.quota
        if quota.max_active is None and quota.max_per_hour is None:
            return
        usage = await self.store.submitter_usage(principal.submitter)
        if quota.max_active is not None and usage.active >= quota.max_active:
            raise QuotaExceeded(f"The key {principal.name!r} has {usage.active} reviews queued or running, its "
                                f"limit; try again when one ends.", retry_after_s=QUEUE_FULL_RETRY_AFTER_S)
        if quota.max_per_hour is not None and usage.last_hour >= quota.max_per_hour:
            raise QuotaExceeded(f"The key {principal.name!r} submitted {usage.last_hour} reviews in the last "
                                f"hour, its limit.", retry_after_s=max(usage.window_frees_in_s, 1.0))

    async def from_github(self, request: ReviewRequest, lifecycle: Lifecycle, store: JobStore) -> Job:
        """The published review a webhook delivery asks for, inside the delivery's transaction:
        a push supersedes the reviews of older heads; the same head's active review is reused."""
        job = self._job_of(request.ref, ReviewOptions(post=True), GITHUB_SUBMITTER, head_sha=request.head_sha,
                           installation_id=request.installation_id)
        if request.head_sha is not None:
            await lifecycle.supersede(job)
        created = await lifecycle.submit(job, max_queued=self.settings.max_queued_jobs)
        found = created or await store.find_active_job(job)
        if found is None:
            raise self._queue_full()
        return found

    async def submit_batch(self, pr_urls: list[str], options: ReviewOptions,
                           principal: Principal) -> tuple[str, list[BatchEntry]]:
        """Many PRs in one statement: an active review of the same PR is reused, and so is a
        succeeded one at the PR's current head (as for one submit: running the same batch again
        starts nothing); a malformed or foreign URL gets its error, URLs beyond the caller's
        quotas `quota_exceeded`, and URLs beyond the queue's room `queue_full`."""
        items: list[tuple[str, NewJob | PRReviewError]] = []
        for url in pr_urls:
            try:
                items.append((url, self.new_job(url, options, principal.submitter)))
            except PRReviewError as exc:
                items.append((url, exc))
        jobs = {parsed.key: parsed for _, parsed in items if isinstance(parsed, NewJob)}
        return await self.lifecycle.submit_batch(items, options.model_dump(mode="json"), queue_full=self._queue_full(),
                                                 submitted_by=principal.submitter,
                                                 max_queued=self.settings.max_queued_jobs,
                                                 quota=principal.quota, quota_exceeded=_over_quota(principal),
                                                 reuse=await self._still_current(jobs))

    async def _still_current(self, jobs: dict[str, NewJob]) -> dict[str, str]:
        """Job key -> the succeeded review of it made at the PR's current head. GitHub is asked
        only for PRs with such a review (a batch run again), a few at a time, each bounded."""
        limit = asyncio.Semaphore(HEAD_LOOKUPS_AT_ONCE)

        async def current(key: str, found: Job) -> tuple[str, str] | None:
            async with limit:
                head = await self._current_head(jobs[key])
            return (key, found.id) if head is not None and head == found.head_sha else None

        succeeded = await self.store.latest_succeeded(list(jobs))
        checks = (current(key, found) for key, found in succeeded.items() if found.head_sha)
        return dict(pair for pair in await asyncio.gather(*checks) if pair)

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


def _over_quota(principal: Principal) -> QuotaExceeded:
    """The error of a batch's URL refused for the caller's quotas (one statement judges them all,
    so the message names both)."""
    quota = principal.quota
    limits = [f"{quota.max_active} queued or running" if quota.max_active is not None else "",
              f"{quota.max_per_hour} submitted per hour" if quota.max_per_hour is not None else ""]
    return QuotaExceeded(f"The key {principal.name!r} is at its limit of reviews "
                         f"({' and '.join(filter(None, limits))}); this PR was not queued.")


def batch_item(entry: BatchEntry) -> dict[str, Any]:
    """One entry of `POST /v1/batches`'s answer: the review's id and status, or the error."""
    if entry.job_id is None:
        return {"pr_url": entry.pr_url, "error": entry.error}
    return {"pr_url": entry.pr_url, "id": entry.job_id, "status": entry.status}
