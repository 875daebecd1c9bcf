"""Closed-loop HTTP load from a separate process: N clients, each sending its requests one after another
on its own keep-alive connection, timed per request.

The load runs in a child process (aiohttp on uvloop), so the benchmark's own fakes (GitHub, the
scripted LLM) never share an interpreter lock with the clients, and the client's CPU cost stays
as small as a Python client allows.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: dict[str, Any] | None = None


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    ids: list[str] = field(default_factory=list)  # `id` of every JSON answer that had one

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _client(session: aiohttp.ClientSession, base_url: str, requests: list[Request],
                  result: LoadResult) -> None:
    for request in requests:
        started = time.perf_counter()
        try:
            async with session.request(request.method, base_url + request.path, json=request.json) as response:
                body = await response.read()
                if response.status >= 400:
                    result.errors.append(str(response.status))
                elif request.method == "POST" and body.startswith(b"{"):
                    data = await response.json(content_type=None)
                    if isinstance(data, dict) and "id" in data:
                        result.ids.append(str(data["id"]))
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.errors.append(type(exc).__name__)
        result.latencies_ms.append((time.perf_counter() - started) * 1000)


async def _run(base_url: str, per_client: list[list[Request]], headers: dict[str, str],
               timeout_s: float, warmup: Request | None) -> LoadResult:
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=len(per_client), limit_per_host=len(per_client), force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        if warmup is not None:  # one request per client: connections are opened outside the timed window
            await asyncio.gather(*(_client(session, base_url, [warmup], LoadResult()) for _ in per_client))
        started = time.perf_counter()
        await asyncio.gather(*(_client(session, base_url, reqs, result) for reqs in per_client))
        result.wall_s = time.perf_counter() - started
    return result


def _child(base_url: str, per_client: list[list[Request]], headers: dict[str, str], timeout_s: float,
           warmup: Request | None, out: Any) -> None:
    import uvloop

    out.send(uvloop.run(_run(base_url, per_client, headers, timeout_s, warmup)))
    out.close()


WARMUP = Request("GET", "/healthz")


def run_load(base_url: str, per_client: list[list[Request]], *, headers: dict[str, str] | None = None,
             timeout_s: float = 60.0, warmup: Request | None = WARMUP) -> LoadResult:
    """`per_client[i]`: the requests client i sends in turn. Blocks until all are answered.
    Each client first sends `warmup` once, untimed, so connections open outside the timed window."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, name="bench-load", daemon=True,
                          args=(base_url.rstrip("/"), per_client, headers or {}, timeout_s, warmup, sender))
    process.start()
    sender.close()
    try:
        result: LoadResult = receiver.recv()
    finally:
        process.join(timeout=10)
    return result
