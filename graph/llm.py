"""OpenAI-compatible chat client: every call bounded (timeout, retries), counted and cancellable.

Cancelling the asyncio task that awaits a call closes its HTTP request, which is how vLLM learns
to stop generating for it: no orphaned generations.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from prreview import metrics
from prreview.errors import LLMBadOutput, LLMError, LLMTimeout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


class CallMeter(Protocol):
    """Per-job accounting hooks around each LLM request (budget, global concurrency, usage).

    `before_call` returns the global slot the call holds (None: uncapped), which `release` frees
    the moment the answer is in, before its usage is written."""

    async def before_call(self) -> int | None: ...

    async def after_call(self, usage: TokenUsage) -> None: ...

    async def release(self, slot: int | None) -> None: ...


class NullMeter:
    async def before_call(self) -> int | None:
        return None

    async def after_call(self, usage: TokenUsage) -> None:
        return None

    async def release(self, slot: int | None) -> None:
        return None


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, LLMError) and not isinstance(exc, LLMBadOutput) and exc.retryable


class LLMClient:
    def __init__(self, base_url: str, *, model: str | None, api_key: str | None, timeout_s: float,
                 max_retries: int, max_tokens: int, extra_body: dict[str, Any] | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                       timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))
        self._model = model
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.extra_body = extra_body or {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def model(self) -> str:
        """The configured model id, else the first model the endpoint serves."""
        if self._model is None:
            self._model = str((await self.model_card())["id"])
        return self._model

    async def model_card(self) -> dict[str, Any]:
        """The endpoint's `/models` entry for our model (the first one when none is configured)."""
        models = (await self._send("GET", "/models")).json().get("data") or []
        if not models:
            raise LLMError("The LLM endpoint serves no model.")
        return next((m for m in models if m.get("id") == self._model), models[0])

    async def chat_json(self, messages: list[dict[str, str]], *, schema_name: str, schema: dict[str, Any],
                        meter: CallMeter, max_tokens: int | None = None) -> tuple[dict[str, Any], TokenUsage]:
        """One structured completion validated as JSON against `schema` by the server."""
        body = {
            "model": await self.model(),
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": max_tokens or self.max_tokens,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": schema_name, "schema": schema, "strict": True}},
            **self.extra_body,
        }
        async for attempt in AsyncRetrying(retry=retry_if_exception(_retryable),
                                           stop=stop_after_attempt(self.max_retries + 1),
                                           wait=wait_exponential_jitter(multiplier=0.5, max=8), reraise=True):
            with attempt:
                return await self._metered_call(body, meter)
        raise AssertionError("unreachable")

    async def _metered_call(self, body: dict[str, Any], meter: CallMeter) -> tuple[dict[str, Any], TokenUsage]:
        slot = await meter.before_call()
        started = time.perf_counter()
        try:
            response = await self._send("POST", "/chat/completions", json=body)
        except LLMError:
            metrics.llm_call(str(body["model"]), ok=False, seconds=time.perf_counter() - started)
            raise
        finally:
            await meter.release(slot)  # the model is free for the next call: the usage write can wait
        data = response.json()
        usage = TokenUsage(**{k: int((data.get("usage") or {}).get(k) or 0)
                              for k in ("prompt_tokens", "completion_tokens")})
        metrics.llm_call(str(body["model"]), ok=True, seconds=time.perf_counter() - started,
                         prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        await meter.after_call(usage)
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"] or ""
            answer = json.loads(content)
        except (KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
            reason = "it hit max_tokens" if _cut_off(data) else str(exc)
            raise LLMBadOutput(f"The model's answer is not the JSON asked for: {reason}") from exc
        return answer, usage

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise _transient(LLMTimeout(f"The LLM did not answer within {self._http.timeout.read} s.")) from exc
        except httpx.TransportError as exc:
            raise _transient(LLMError(f"The LLM endpoint is unreachable: {type(exc).__name__}.")) from exc
        if response.status_code >= 400:
            error = LLMError(f"The LLM answered {response.status_code}: {response.text[:200]}")
            raise _transient(error) if response.status_code >= 500 or response.status_code == 429 else error
        return response


def _cut_off(data: Any) -> bool:
    try:
        return bool(data["choices"][0].get("finish_reason") == "length")
    except (KeyError, IndexError, TypeError, AttributeError):
        return False


def _transient(error: LLMError) -> LLMError:
    error.retryable = True
    return error
