"""What can go wrong with a request to the fake GitHub: scripted failures and rate limits.

Each caller (its Authorization value, or anonymous) has an hourly budget of requests like GitHub's,
reported in the `x-ratelimit-*` headers. Not locked: the fake calls it under its own lock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request

from prreview.demo._github_http import Reply, error, unprocessable

AUTHENTICATED_LIMIT = 5000  # requests per hour, as GitHub grants a token
ANONYMOUS_LIMIT = 60
RATE_WINDOW_S = 3600


@dataclass
class _Fault:
    kind: Literal["primary", "secondary", "error"]
    remaining: int
    status: int
    reset_in_s: float
    match: str | None
    method: str | None = None

    def applies(self, request: Request) -> bool:
        return ((self.match is None or self.match in request.url.path)
                and (self.method is None or self.method == request.method))


@dataclass
class _Budget:
    limit: int
    reset_at: int
    used: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class Faults:
    """Scripted faults, then the caller's hourly budget, in GitHub's order.

    With `enforce_rate_limit` a spent budget answers 403 until its reset, as GitHub does; without
    it (so long benchmarks never stall for an hour) a spent budget starts a new window at once.
    """

    def __init__(self, *, rate_limit: int = AUTHENTICATED_LIMIT, anonymous_rate_limit: int = ANONYMOUS_LIMIT,
                 enforce_rate_limit: bool = False) -> None:
        self.rate_limit = rate_limit
        self.anonymous_rate_limit = anonymous_rate_limit
        self.enforce_rate_limit = enforce_rate_limit
        self._faults: list[_Fault] = []
        self._budgets: dict[str, _Budget] = {}

    def rate_limit_next(self, n: int, kind: Literal["primary", "secondary"], reset_in_s: float,
                        match: str | None) -> None:
        self._faults.append(_Fault(kind, n, 403 if kind == "primary" else 429, reset_in_s, match))

    def fail_next(self, n: int, status: int, match: str | None, method: str | None) -> None:
        self._faults.append(_Fault("error", n, status, 0.0, match, method))

    def admit(self, request: Request) -> None:
        """Charge one request to its caller, or raise the reply a scripted fault or a spent budget gives."""
        budget = self._budget(request)
        fault = next((f for f in self._faults if f.applies(request)), None)
        if fault is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            raise _fault_reply(fault, budget)
        if budget.remaining <= 0:
            if self.enforce_rate_limit:
                raise _fault_reply(_Fault("primary", 1, 403, budget.reset_at - time.time(), None), budget)
            budget = _Budget(budget.limit, int(time.time()) + RATE_WINDOW_S)
            self._budgets[_identity(request)] = budget
        budget.used += 1

    def headers(self, request: Request) -> dict[str, str]:
        """The `x-ratelimit-*` headers of an answer to this caller."""
        budget = self._budget(request)
        return {"x-ratelimit-limit": str(budget.limit), "x-ratelimit-remaining": str(budget.remaining),
                "x-ratelimit-reset": str(budget.reset_at), "x-ratelimit-used": str(budget.used),
                "x-ratelimit-resource": "core"}

    def rate_limit_json(self, request: Request) -> dict[str, Any]:
        """The body of `GET /rate_limit` for this caller."""
        budget = self._budget(request)
        core = {"limit": budget.limit, "used": budget.used, "remaining": budget.remaining,
                "reset": budget.reset_at}
        search = {"limit": 30, "used": 0, "remaining": 30, "reset": int(time.time()) + 60}
        return {"resources": {"core": core, "search": search, "graphql": core}, "rate": core}

    def _budget(self, request: Request) -> _Budget:
        identity = _identity(request)
        budget = self._budgets.get(identity)
        now = int(time.time())
        if budget is None or budget.reset_at <= now:
            limit = self.anonymous_rate_limit if identity == "anonymous" else self.rate_limit
            budget = self._budgets[identity] = _Budget(limit, now + RATE_WINDOW_S)
        return budget


def _identity(request: Request) -> str:
    return request.headers.get("authorization") or "anonymous"


def _fault_reply(fault: _Fault, budget: _Budget) -> Reply:
    if fault.kind == "error" and fault.status == 422:
        return unprocessable("Pull request review thread line must be part of the diff")
    if fault.kind == "error":
        return error(fault.status, "Server Error")
    wait_s = max(1, math.ceil(fault.reset_in_s))
    if fault.kind == "secondary":
        reply = error(429, "You have exceeded a secondary rate limit. Please wait a few minutes "
                           "before you try again.")
        reply.response.headers["retry-after"] = str(wait_s)
        return reply
    reply = error(403, "API rate limit exceeded for user. (But here's the good news: "
                       "Authenticated requests get a higher rate limit.)")
    reply.response.headers.update({
        "x-ratelimit-limit": str(budget.limit), "x-ratelimit-remaining": "0",
        "x-ratelimit-used": str(budget.limit),
        "x-ratelimit-reset": str(math.ceil(time.time() + fault.reset_in_s)),
        "x-ratelimit-resource": "core"})
    return reply


class WriteFaults:
    """Failures after a write is done: GitHub records it, then answers as if it had failed (a 502,
    a lost answer), so a client that retries blindly posts twice."""

    def __init__(self) -> None:
        self._faults: list[_Fault] = []

    def fail_after_write_next(self, n: int, status: int, match: str | None, method: str | None) -> None:
        self._faults.append(_Fault("error", n, status, 0.0, match, method))

    def after(self, request: Request) -> Reply | None:
        """The reply that replaces the answer to this (successful) write, if a fault applies to it."""
        fault = next((f for f in self._faults if f.applies(request)), None)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._faults.remove(fault)
        return error(fault.status, "Server Error")
