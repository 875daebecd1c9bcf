"""Per-job LLM accounting: the budget checked before each call, usage recorded after it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from actors.llm_gate import LLMGate
from graph.llm import TokenUsage
from prreview.db import retry_transient
from prreview.errors import BudgetExceeded, JobCancelled
from prreview.store import JobStore

# A database blip while usage is written must not lose a call already paid for.
USAGE_WRITE_RETRY_S = 30.0


@dataclass
class JobMeter:
    """Stops a job's LLM spending at its budget, and at once when the job is cancelled."""

    store: JobStore
    job_id: str
    max_calls: int
    max_tokens: int
    gate: LLMGate
    usage: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False
    # When this run of the job began: its calls wait for a global slot behind those of reviews
    # started before it (actors/llm_gate.py).
    started: float = field(default_factory=time.monotonic)

    async def before_call(self) -> int | None:
        """Counts the call (and takes a global slot, returned); raises when the job may not spend."""
        if self.cancelled:
            raise JobCancelled("The review was cancelled; no further LLM call is made.")
        calls = self.usage.get("llm_calls", 0)
        tokens = self.usage.get("prompt_tokens", 0) + self.usage.get("completion_tokens", 0)
        if calls >= self.max_calls:
            raise BudgetExceeded(f"The review used its budget of {self.max_calls} LLM calls.")
        if tokens >= self.max_tokens:
            raise BudgetExceeded(f"The review used its budget of {self.max_tokens} tokens ({tokens} used).")
        begun = await self.gate.begin(self.job_id, priority=self.started)
        self.usage = begun.usage
        return begun.slot

    async def after_call(self, usage: TokenUsage) -> None:
        self.usage = await retry_transient(
            lambda: self.store.add_tokens(self.job_id, prompt_tokens=usage.prompt_tokens,
                                          completion_tokens=usage.completion_tokens),
            within_s=USAGE_WRITE_RETRY_S)

    async def release(self, slot: int | None) -> None:
        await self.gate.release(slot)
