"""Per-job LLM accounting: budget checks before each call, usage recorded after it."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.llm_gate import LLMGate
from graph.llm import TokenUsage
from prreview.errors import BudgetExceeded, JobCancelled
from prreview.store import JobStore


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
    _slots: list[int] = field(default_factory=list)

    async def before_call(self) -> None:
        if self.cancelled:
            raise JobCancelled("The review was cancelled; no further LLM call is made.")
        calls = self.usage.get("llm_calls", 0)
        tokens = self.usage.get("prompt_tokens", 0) + self.usage.get("completion_tokens", 0)
        if calls >= self.max_calls:
            raise BudgetExceeded(f"The review used its budget of {self.max_calls} LLM calls.")
        if tokens >= self.max_tokens:
            raise BudgetExceeded(f"The review used its budget of {self.max_tokens} tokens ({tokens} used).")
        self._slots.append(await self.gate.acquire(self.job_id))
        # Count the call before it is sent: a call that dies half-way has still been paid for.
        self.usage = await self.store.add_usage(self.job_id, llm_calls=1, prompt_tokens=0, completion_tokens=0)

    async def after_call(self, usage: TokenUsage) -> None:
        self.usage = await self.store.add_usage(self.job_id, llm_calls=0, prompt_tokens=usage.prompt_tokens,
                                                completion_tokens=usage.completion_tokens)

    async def release(self) -> None:
        if self._slots:
            await self.gate.release(self._slots.pop())
