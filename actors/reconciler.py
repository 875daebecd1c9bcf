"""The periodic sweep that makes lost work impossible and gives data an end: expired leases,
forgotten dispatches, finished jobs' leftover checkpoints, and retention."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from langgraph.checkpoint.base import BaseCheckpointSaver

from prreview.lifecycle import Lifecycle, Purged
from prreview.store import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    recovered: list[str]
    released: list[str]
    stats: tuple[int, int]  # (queued, running), for the queue gauges


async def sweep(lifecycle: Lifecycle, store: JobStore, *, max_attempts: int, tracked: list[str],
                may_recover: Callable[[], bool] = lambda: True) -> SweepResult:
    """Re-queue running jobs whose worker stopped renewing its lease (replica or node lost), and
    release queued jobs handed to a pool call nobody tracks any more (dispatcher restarted).

    `may_recover` is asked once the database has answered this sweep's first statement: False
    while the workers may not have had the chance to renew their leases since the database came
    back (an expired lease then says nothing about its worker)."""
    released = await lifecycle.release_stale(tracked)
    recovered = await lifecycle.recover(max_attempts=max_attempts, reason="worker lease expired") \
        if may_recover() else []
    stats = await store.queue_stats()
    if recovered or released:
        log.info("sweep: recovered %s, released %s", [j.id for j in recovered], released)
    return SweepResult([j.id for j in recovered], released, (stats.queued, stats.running))


async def retention(lifecycle: Lifecycle, checkpointer: BaseCheckpointSaver, *, retention_days: float) -> Purged:
    """Delete what no one needs any more: the LangGraph threads of finished jobs (their worker
    normally deletes them; these are left over from a crash or an outage), and jobs, events,
    batches and PR snapshots past the retention period."""
    for thread_id in await lifecycle.leftover_threads():
        await checkpointer.adelete_thread(thread_id)
    purged = await lifecycle.purge(retention_days=retention_days)
    if purged.jobs or purged.batches or purged.snapshots:
        log.info("retention: %s", purged)
    return purged
