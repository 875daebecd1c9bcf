"""The global cap on concurrent LLM calls across every agent replica, kept in Postgres."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from prreview.store import JobStore


@dataclass
class LLMGate:
    """A distributed semaphore: a call takes a slot row before it is sent and frees it after.
    A replica that dies mid-call leaves a claim that expires after `hold_s`."""

    store: JobStore
    holder: str
    hold_s: float
    poll_s: float = 0.1

    async def acquire(self, job_id: str) -> int:
        while True:
            slot = await self.store.acquire_llm_slot(holder=self.holder, job_id=job_id, hold_s=self.hold_s)
            if slot is not None:
                return slot
            await asyncio.sleep(self.poll_s * (0.5 + random.random()))

    async def release(self, slot: int) -> None:
        await self.store.release_llm_slot(slot, holder=self.holder)
