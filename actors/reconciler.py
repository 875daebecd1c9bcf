"""The periodic sweep that makes lost work impossible: expired leases and forgotten dispatches."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prreview.store import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    requeued: list[str]
    failed: list[str]
    cancelled: list[str]
    released: list[str]


async def sweep(store: JobStore, *, max_attempts: int, in_flight: list[str]) -> SweepResult:
    """Re-queue running jobs whose worker stopped renewing its lease (replica or node lost), and
    release queued jobs handed to a pool call nobody tracks any more (dispatcher restarted)."""
    recovered = await store.recover_jobs(max_attempts=max_attempts, only_expired=True)
    result = SweepResult(
        requeued=[str(r["id"]) for r in recovered if r["status"] == "queued"],
        failed=[str(r["id"]) for r in recovered if r["status"] == "failed"],
        cancelled=[str(r["id"]) for r in recovered if r["status"] == "cancelled"],
        released=await store.release_stale_dispatches(in_flight),
    )
    for job_id in result.requeued:
        await store.record_event(job_id, "requeued", {"reason": "worker lease expired"}, progress={"step": "queued"})
    for job_id in result.failed:
        await store.record_event(job_id, "failed", {"error": {"code": "max_attempts_exceeded"}})
    for job_id in result.cancelled:
        await store.record_event(job_id, "cancelled", {})
    if recovered or result.released:
        log.info("sweep: %s", result)
    return result
