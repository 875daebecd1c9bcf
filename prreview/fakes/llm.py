"""A scripted OpenAI-compatible chat server, for tests that need exact timing, faults or answers.

`POST /v1/chat/completions` (plain or `stream: true` SSE) and `GET /v1/models`. Answers come
from `responder` (default: the toy reviewer in `_toy_reviewer`). Standalone for benchmarks:
`python -m prreview.fakes.llm --port 9998 --latency-s 2`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from prreview.fakes._server import BackgroundServer, Startable, wait_for_signal
from prreview.fakes._toy_reviewer import all_message_text, default_responder

__all__ = ["LLMCall", "Responder", "ScriptedLLM"]

Responder = Callable[[dict[str, Any]], dict[str, Any] | str]
Outcome = Literal["completed", "aborted", "failed"]
_CLOSING_POLL_S = 0.1  # how often a waiting request checks whether the server is stopping
_STREAM_CHUNK_CHARS = 24


@dataclass
class LLMCall:
    """One chat request: what was asked, when, and how it ended (None while in flight)."""

    id: int
    request: dict[str, Any]
    started_at: float  # time.time()
    authorization: str | None
    finished_at: float | None = None
    outcome: Outcome | None = None
    status: int | None = None
    content: str | None = None  # the answer's text, when one was produced
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """All message text of the request."""
        return all_message_text(self.request)

    @property
    def stream(self) -> bool:
        return bool(self.request.get("stream"))


def prompt_tokens(request: dict[str, Any]) -> int:
    return len(all_message_text(request)) // 4 + 1


def completion_tokens(content: str) -> int:
    return len(content) // 4 + 1


class ScriptedLLM(Startable):
    """An OpenAI-compatible server with knobs: latency, failures, hangs, custom answers.

    Counters and records are thread-safe. A request whose client disconnects while it waits
    (latency or hang) ends as `aborted`, which is how tests see that a cancel reached the model.
    """

    def __init__(self, *, latency_s: float = 0.0, api_key: str | None = None,
                 model: str = "scripted-reviewer", responder: Responder | None = None,
                 chunk_delay_s: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.latency_s = latency_s
        self.chunk_delay_s = chunk_delay_s  # between stream chunks
        self.api_key = api_key
        self.model = model
        self.responder: Responder | None = responder
        self._cond = threading.Condition(threading.RLock())
        self._calls: list[LLMCall] = []
        self._fail: list[list[int]] = []  # [remaining, status], oldest first
        self._hang = 0
        self._unauthorized = 0
        self._peak_in_flight = 0
        self._ids = itertools.count(1)
        self._closing = threading.Event()
        self.server = BackgroundServer(self._build_app(), host=host, port=port, graceful_shutdown_s=1)

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._closing.clear()
        self.server.start()

    def stop(self) -> None:
        self._closing.set()  # hung requests give up, so the server can drain
        self.server.stop()


    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, to use as LLM_BASE_URL."""
        return f"{self.url}/v1"

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
    def _build_app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
        ])

    def _authorized(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}"

    @staticmethod
    def _error(status: int, message: str, kind: str, code: str | int | None = None) -> JSONResponse:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        headers = {"retry-after": "1"} if status in (429, 503) else None
        return JSONResponse(body, status_code=status, headers=headers)

    async def _models(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return JSONResponse({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "prreview-fakes"}]})

    def _finish(self, call: LLMCall, outcome: Outcome, status: int) -> None:
        with self._cond:
            if call.outcome is None:
                call.outcome, call.status, call.finished_at = outcome, status, time.time()
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

    async def _chat(self, request: Request) -> Response:
        if not self._authorized(request):
            with self._cond:
                self._unauthorized += 1
            return self._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "The request body is not valid JSON.", "BadRequestError", 400)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(400, "`messages` is required.", "BadRequestError", 400)
        call = LLMCall(next(self._ids), body, time.time(), request.headers.get("authorization"))
        with self._cond:
            self._calls.append(call)
            self._peak_in_flight = max(self._peak_in_flight, sum(1 for c in self._calls if c.outcome is None))
            self._cond.notify_all()
        fault = self._take_fault()
        if fault and fault[0] == "fail":
            self._finish(call, "failed", fault[1])
            return self._error(fault[1], "Scripted failure.", "InternalServerError", fault[1])
        if fault and fault[0] == "hang":
            await self._wait(request, None)
            self._finish(call, "aborted", 499)
            return self._error(503, "The server is shutting down.", "ServiceUnavailable", 503)
        if not await self._wait(request, self.latency_s):
            self._finish(call, "aborted", 499)
            return self._error(503, "The client went away.", "ServiceUnavailable", 503)
        try:
            answer = (self.responder or default_responder)(body)
        except Exception as exc:  # a test's responder failing is a scripted 500, not a server crash
            self._finish(call, "failed", 500)
            return self._error(500, f"responder raised {type(exc).__name__}: {exc}", "InternalServerError",
                               500)
        content = answer if isinstance(answer, str) else json.dumps(answer)
        content, finish_reason = _truncate(content, body)
        usage = _usage(body, content)
        call.content, call.usage = content, usage
        if body.get("stream"):
            return StreamingResponse(self._stream(request, call, content, finish_reason, usage),
                                     media_type="text/event-stream")
        self._finish(call, "completed", 200)
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage,
        })

    async def _stream(self, request: Request, call: LLMCall, content: str, finish_reason: str,
                      usage: dict[str, int]) -> AsyncIterator[str]:
        body = call.request
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model") or self.model}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                         "logprobs": None}]}
            if include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            for start in range(0, len(content), _STREAM_CHUNK_CHARS):
                if self.chunk_delay_s and not await self._wait(request, self.chunk_delay_s):
                    return
                yield chunk({"content": content[start:start + _STREAM_CHUNK_CHARS]})
            yield chunk({}, finish_reason)
            if include_usage:
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
            self._finish(call, "completed", 200)
        finally:
            # Cancelled or returned early because the client left: the answer was not delivered.
            self._finish(call, "aborted", 499)


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _truncate(content: str, body: dict[str, Any]) -> tuple[str, str]:
    """Cut the answer at max_tokens like a model would (finish_reason "length")."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and limit > 0 and completion_tokens(content) > limit:
        return content[: limit * 4], "length"
    return content, "stop"


def _usage(body: dict[str, Any], content: str) -> dict[str, int]:
    prompt, completion = prompt_tokens(body), completion_tokens(content)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prreview.fakes.llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9998)
    parser.add_argument("--latency-s", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--api-key", default=None, help="bearer key the server requires (default: none)")
    parser.add_argument("--model", default="scripted-reviewer", help="model id listed by /v1/models")
    args = parser.parse_args(argv)
    llm = ScriptedLLM(latency_s=args.latency_s, api_key=args.api_key, model=args.model, host=args.host,
                      port=args.port)
    llm.start()
    try:
        print(f"scripted LLM at {llm.base_url} (LLM_BASE_URL={llm.base_url}, LLM_MODEL={llm.model})",
              flush=True)
        wait_for_signal(llm.server)
    finally:
        llm.stop()


if __name__ == "__main__":
    main()
