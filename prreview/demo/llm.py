"""The demo's model: the toy reviewer behind an OpenAI-compatible chat API, after a fixed latency.

`POST /v1/chat/completions` (plain, or `stream: true` as server-sent events) and `GET /v1/models`,
on 127.0.0.1 in a background thread. Answers come from `responder` (default: the toy reviewer in
`toy_reviewer`), cut at the request's max_tokens as a model would be.

Subclasses hook into one request's life (`_chat`, `_answer`, `_wait`, `_finish`): the test suite's
scripted LLM adds faults, hangs, an API key and a record of every call that way.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from prreview.demo._server import BackgroundServer, Startable
from prreview.demo.toy_reviewer import all_message_text, default_responder

__all__ = ["DemoLLM", "Exchange", "Outcome", "Responder"]

Responder = Callable[[dict[str, Any]], dict[str, Any] | str]
Outcome = Literal["completed", "aborted", "failed"]
_STREAM_CHUNK_CHARS = 24


@dataclass
class Exchange:
    """One chat request as it is answered: the request's body, then how it ended."""

    request: dict[str, Any]
    finished_at: float | None = None  # time.time()
    outcome: Outcome | None = None  # None while in flight
    status: int | None = None
    content: str | None = None  # the answer's text, when one was produced
    usage: dict[str, int] = field(default_factory=dict)


def prompt_tokens(request: dict[str, Any]) -> int:
    return len(all_message_text(request)) // 4 + 1


def completion_tokens(content: str) -> int:
    return len(content) // 4 + 1


def openai_error(status: int, message: str, kind: str, code: str | int | None = None) -> JSONResponse:
    """An error in the OpenAI API's shape; 429 and 503 say when to retry."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    headers = {"retry-after": "1"} if status in (429, 503) else None
    return JSONResponse(body, status_code=status, headers=headers)


async def read_chat_request(request: Request) -> dict[str, Any] | Response:
    """The request's JSON body, or the 400 answer when it is not a chat request."""
    try:
        body = await request.json()
    except ValueError:
        return openai_error(400, "The request body is not valid JSON.", "BadRequestError", 400)
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return openai_error(400, "`messages` is required.", "BadRequestError", 400)
    return body


class DemoLLM(Startable):
    """An OpenAI-compatible server answering with `responder` after `latency_s` seconds."""

    def __init__(self, *, latency_s: float = 0.0, model: str = "scripted-reviewer",
                 responder: Responder | None = None, chunk_delay_s: float = 0.0, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.latency_s = latency_s
        self.chunk_delay_s = chunk_delay_s  # between stream chunks
        self.model = model
        self.responder: Responder | None = responder
        self.server = BackgroundServer(self._build_app(), host=host, port=port, graceful_shutdown_s=1)

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, to use as LLM_BASE_URL."""
        return f"{self.url}/v1"

    # --- HTTP -----------------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
        ])

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 0, "owned_by": "prreview-demo"}]})

    async def _chat(self, request: Request) -> Response:
        body = await read_chat_request(request)
        if isinstance(body, Response):
            return body
        return await self._answer(request, Exchange(body))

    async def _wait(self, request: Request, seconds: float) -> bool:
        """Sleep `seconds`; False when the answer should not be sent any more (never here)."""
        await asyncio.sleep(seconds)
        return True

    def _finish(self, call: Exchange, outcome: Outcome, status: int) -> None:
        """Record how `call` ended; the first outcome stays."""
        if call.outcome is None:
            call.outcome, call.status, call.finished_at = outcome, status, time.time()

    async def _answer(self, request: Request, call: Exchange) -> Response:
        """Wait the latency, then answer `call` with the responder's text, plain or streamed."""
        body = call.request
        if not await self._wait(request, self.latency_s):
            self._finish(call, "aborted", 499)
            return openai_error(503, "The client went away.", "ServiceUnavailable", 503)
        try:
            answer = (self.responder or default_responder)(body)
        except Exception as exc:  # a failing responder is a 500 answer, not a server crash
            self._finish(call, "failed", 500)
            return openai_error(500, f"responder raised {type(exc).__name__}: {exc}", "InternalServerError", 500)
        content = answer if isinstance(answer, str) else json.dumps(answer)
        content, finish_reason = _truncate(content, body)
        call.content, call.usage = content, _usage(body, content)
        if body.get("stream"):
            return StreamingResponse(self._stream(request, call, finish_reason), media_type="text/event-stream")
        self._finish(call, "completed", 200)
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": call.usage,
        })

    async def _stream(self, request: Request, call: Exchange, finish_reason: str) -> AsyncIterator[str]:
        body, content = call.request, call.content or ""
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
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': call.usage})}\n\n"
            yield "data: [DONE]\n\n"
            self._finish(call, "completed", 200)
        finally:
            # Cancelled or returned early because the client left: the answer was not delivered.
            self._finish(call, "aborted", 499)


def _truncate(content: str, body: dict[str, Any]) -> tuple[str, str]:
    """Cut the answer at max_tokens like a model would (finish_reason "length")."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and limit > 0 and completion_tokens(content) > limit:
        return content[: limit * 4], "length"
    return content, "stop"


def _usage(body: dict[str, Any], content: str) -> dict[str, int]:
    prompt, completion = prompt_tokens(body), completion_tokens(content)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
