"""Where every LLM call of a replica begins: the job's cancel flag, the global cap, the count.

With an external endpoint (`LLM_BASE_URL`) the service caps its own concurrent calls across all
replicas (`PR_REVIEW_LLM_GLOBAL_CONCURRENCY` slots in Postgres), to protect a shared quota. With
the in-cluster vLLM app there is no slot table: the LLM deployment's `max_ongoing_requests` and
Serve's queue bound the calls, and the queued ones are what makes its autoscaler add replicas
(a fixed cap below `target_ongoing_requests x max_replicas` would pin it at one replica).

A replica's calls that wait for a slot queue up, and only the first of them asks the database: a
freed slot (NOTIFY) wakes one caller per replica, not every waiting one (waking them all cost
about 140 database transactions per LLM call under a backlog, against 50; bench/llm_utilization.py).
The queue serves the review that started first before later ones, and each review's calls in the
order they came: a review's summary does not wait behind the groups of every review started
after it, so reviews finish one after another instead of in waves, and the model never idles
while a whole wave starts at once.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prreview.config import Settings
from prreview.errors import JobCancelled
from prreview.notify import wait
from prreview.store import JobStore

# A freed slot is pushed (NOTIFY); the first waiter also re-tries this often in case a notice was lost.
SLOT_FALLBACK_POLL_S = 2.0


def global_slots(settings: Settings) -> int | None:
    """The global cap on concurrent LLM calls, or None when Serve bounds them (in-cluster app)."""
    return settings.llm_global_concurrency if settings.llm_base_url else None


@dataclass(frozen=True)
class Begun:
    slot: int | None
    usage: dict[str, int]


@dataclass(order=True)
class _Turn:
    priority: float
    seq: int
    event: asyncio.Event = field(compare=False, default_factory=asyncio.Event)


class SlotQueue:
    """This replica's calls waiting for a global slot, lowest `priority` first, then in arrival
    order. The first one's event is set when it should ask the database (it arrived first, a slot
    was freed, or the one before it left)."""

    def __init__(self) -> None:
        self._queue: list[_Turn] = []  # sorted; a few hundred at most
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def notify(self, _payload: str = "") -> None:
        """A slot was freed somewhere (or the listener reconnected): the first waiter tries."""
        if self._queue:
            self._queue[0].event.set()

    def first(self, turn: asyncio.Event) -> bool:
        return bool(self._queue) and self._queue[0].event is turn

    @contextlib.asynccontextmanager
    async def turn(self, priority: float = 0.0) -> AsyncIterator[asyncio.Event]:
        entry = _Turn(priority, next(self._seq))
        bisect.insort(self._queue, entry)
        if self._queue[0] is entry:
            entry.event.set()  # first now: it asks at once (whoever was first goes on waiting its turn)
        try:
            yield entry.event
        finally:
            was_first = self._queue[0] is entry
            self._queue.remove(entry)
            if was_first:
                self.notify()  # the next one tries at once: more than one slot may be free


@dataclass
class LLMGate:
    """A distributed semaphore with a cancel check: a call takes a slot row (when capped) in the
    same statement that checks its job may still spend, and frees it after. A replica that dies
    mid-call leaves a claim that expires after `hold_s`."""

    store: JobStore
    owner: str
    slots: int | None
    hold_s: float
    freed: SlotQueue = field(default_factory=SlotQueue)

    async def begin(self, job_id: str, priority: float = 0.0) -> Begun:
        """Count one call of `job_id` (and take a slot); raises JobCancelled when the job may not
        spend any more: cancelled, past its deadline, or no longer this replica's. A job stopped
        while its call waits in the queue is cancelled there (its task is), asking nothing.
        Waiting calls with a lower `priority` (the review's start time) get slots first."""
        if self.slots is None:
            return await self._try(job_id)
        async with self.freed.turn(priority) as turn:
            while True:
                woken = await wait(turn, SLOT_FALLBACK_POLL_S)
                if woken or self.freed.first(turn):  # the first one also polls, in case a NOTIFY was lost
                    begun = await self._try(job_id)
                    if begun.usage:
                        return begun

    async def _try(self, job_id: str) -> Begun:
        row = await self.store.begin_llm_call(job_id=job_id, owner=self.owner, holder=self.owner,
                                              gated=self.slots is not None, hold_s=self.hold_s)
        if not row["allowed"]:
            raise JobCancelled("The review may not start another LLM call.")
        return Begun(row["slot"], dict(row["usage"] or {}))

    async def release(self, slot: int | None) -> None:
        if slot is not None:
            await self.store.release_llm_slot(slot, holder=self.owner)
