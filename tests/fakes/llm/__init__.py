"""The test suite's LLM: the demo's OpenAI-compatible server plus faults, hangs, an API key, records.

`ScriptedLLM` extends `prreview.demo.DemoLLM` (latency, toy reviewer, custom `responder`) with
what tests script and check: `fail_next`, `hang_next`, a required API key, a record of every call
(`requests`, `LLMCall`) with counters (`started`, `completed`, `aborted`, `in_flight`,
`peak_in_flight`...), and `wait_until`. Standalone for benchmarks:
`python -m tests.fakes.llm --port 9998 --latency-s 2`.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from prreview.demo import DemoLLM
from prreview.demo.llm import Exchange, Outcome, Responder, openai_error, read_chat_request
from prreview.demo.toy_reviewer import all_message_text

__all__ = ["LLMCall", "Responder", "ScriptedLLM"]

_CLOSING_POLL_S = 0.1  # how often a waiting request checks whether the server is stopping


@dataclass(kw_only=True)
class LLMCall(Exchange):
    """One chat request: what was asked, when, and how it ended (`outcome` None while in flight)."""

    id: int
    started_at: float  # time.time()
    authorization: str | None

    @property
    def text(self) -> str:
        """All message text of the request."""
        return all_message_text(self.request)

    @property
    def stream(self) -> bool:
        return bool(self.request.get("stream"))


class ScriptedLLM(DemoLLM):
    """An OpenAI-compatible server with knobs: latency, failures, hangs, custom answers.

    Counters and records are thread-safe. A request whose client disconnects while it waits
    (latency or hang) ends as `aborted`, which is how tests see that a cancel reached the model.
    """

    def __init__(self, *, latency_s: float = 0.0, api_key: str | None = None,
                 model: str = "scripted-reviewer", responder: Responder | None = None,
                 chunk_delay_s: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self._cond = threading.Condition(threading.RLock())
        self._calls: list[LLMCall] = []
        self._fail: list[list[int]] = []  # [remaining, status], oldest first
        self._hang = 0
        self._unauthorized = 0
        self._peak_in_flight = 0
        self._ids = itertools.count(1)
        self._closing = threading.Event()
        super().__init__(latency_s=latency_s, model=model, responder=responder, chunk_delay_s=chunk_delay_s,
                         host=host, port=port)

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._closing.clear()
        super().start()

    def stop(self) -> None:
        self._closing.set()  # hung requests give up, so the server can drain
        super().stop()

    # --- knobs ----------------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next `n` chat requests answer `status` at once."""
        with self._cond:
            self._fail.append([n, status])

    def hang_next(self, n: int = 1) -> None:
        """The next `n` chat requests never answer; each ends when its client disconnects."""
        with self._cond:
            self._hang += n

    def reset(self) -> None:
        """Forget records, counters and pending faults (latency and responder stay)."""
        with self._cond:
            self._calls.clear()
            self._fail.clear()
            self._hang = 0
            self._unauthorized = 0
            self._peak_in_flight = 0
            self._cond.notify_all()

    # --- records --------------------------------------------------------------------------------
    @property
    def requests(self) -> list[LLMCall]:
        with self._cond:
            return list(self._calls)

    def _count(self, outcome: Outcome | None) -> int:
        with self._cond:
            return sum(1 for call in self._calls if call.outcome == outcome)

    @property
    def started(self) -> int:
        with self._cond:
            return len(self._calls)

    @property
    def completed(self) -> int:
        return self._count("completed")

    @property
    def aborted(self) -> int:
        return self._count("aborted")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def in_flight(self) -> int:
        return self._count(None)

    @property
    def peak_in_flight(self) -> int:
        """The most requests in flight at once since start (or reset): checks concurrency limits."""
        with self._cond:
            return self._peak_in_flight

    @property
    def unauthorized(self) -> int:
        """Requests refused with 401 (not counted as started)."""
        with self._cond:
            return self._unauthorized

    def calls_mentioning(self, text: str) -> list[LLMCall]:
        with self._cond:
            return [call for call in self._calls if text in call.text]

    def wait_until(self, predicate: Callable[[ScriptedLLM], bool], timeout_s: float = 10.0) -> bool:
        """Block until `predicate(self)` holds (re-checked on every request event); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
            return True

    # --- HTTP -----------------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}"

    async def _models(self, request: Request) -> Response:
        if not self._authorized(request):
            return openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return await super()._models(request)

    async def _chat(self, request: Request) -> Response:
        if not self._authorized(request):
            with self._cond:
                self._unauthorized += 1
            return openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        body = await read_chat_request(request)
        if isinstance(body, Response):
            return body
        call = LLMCall(request=body, id=next(self._ids), started_at=time.time(),
                       authorization=request.headers.get("authorization"))
        with self._cond:
            self._calls.append(call)
            self._peak_in_flight = max(self._peak_in_flight, sum(1 for c in self._calls if c.outcome is None))
            self._cond.notify_all()
        fault = self._take_fault()
        if fault and fault[0] == "fail":
            self._finish(call, "failed", fault[1])
            return openai_error(fault[1], "Scripted failure.", "InternalServerError", fault[1])
        if fault and fault[0] == "hang":
            await self._wait(request, None)
            self._finish(call, "aborted", 499)
            return openai_error(503, "The server is shutting down.", "ServiceUnavailable", 503)
        return await self._answer(request, call)

    def _finish(self, call: Exchange, outcome: Outcome, status: int) -> None:
        with self._cond:
            super()._finish(call, outcome, status)
            self._cond.notify_all()

    def _take_fault(self) -> tuple[str, int] | None:
        with self._cond:
            if self._fail:
                entry = self._fail[0]
                entry[0] -= 1
                if entry[0] <= 0:
                    self._fail.pop(0)
                return "fail", entry[1]
            if self._hang:
                self._hang -= 1
                return "hang", 0
            return None

    async def _wait(self, request: Request, seconds: float | None) -> bool:
        """Sleep `seconds` (None: forever); False as soon as the client is gone or the server stops.

        The disconnect is awaited, not polled: the ASGI server's `receive()` answers
        `http.disconnect` the moment the client closes, so hundreds of waiting requests cost
        nothing while they wait (polling `is_disconnected()` every few ms does not scale).
        """
        watcher = asyncio.ensure_future(_until_disconnected(request))
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return not watcher.done()
                done, _ = await asyncio.wait({watcher}, timeout=_CLOSING_POLL_S if left is None
                                             else min(left, _CLOSING_POLL_S))
                if done or self._closing.is_set():
                    return False
        finally:
            watcher.cancel()


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
