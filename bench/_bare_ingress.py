"""The ingress's routes (`IngressCore`) on plain uvicorn, without Ray: the baseline of
`bench/submit_latency.py`. Reads the same environment as a replica (DATABASE_URL, GITHUB_API_URL...).

    python -m bench._bare_ingress --port 8100 [--loop uvloop|asyncio] [--http httptools|h11]
        [--auth none|memory|db] [--nice 15]

It runs at the niceness Ray gives its workers (`RAY_worker_niceness`, 15 by default: every Serve
replica runs at it), so that on a busy machine both servers compete for the CPU on equal terms.

`--auth` puts a stand-in for the API-key check in front of every /v1 route, to price it before the
real one lands: `memory` hashes the Bearer key and looks it up in a dict (a cache hit), `db` also
sends one query per request (a key looked up by its hash in PostgreSQL).

`--submit one-statement` prices a submit in one database round trip instead of two (the reuse
lookup skipped, as if it were part of the INSERT's statement). `--pool-check off` prices the
connection pool's check on every checkout (`check=AsyncConnectionPool.check_connection` in
prreview/db.py: an empty query, so one more round trip per statement).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import uvicorn

from prreview.config import load_settings
from serve_app.ingress import IngressCore

# What Ray sets for its worker processes, Serve replicas included (its `worker_niceness` setting).
RAY_WORKER_NICENESS = int(os.environ.get("RAY_worker_niceness", "15"))  # noqa: SIM112 (Ray spells it so)

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


def _auth_stand_in(app: ASGIApp, core: IngressCore, mode: str) -> ASGIApp:
    known: dict[str, str] = {}

    async def guarded(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                      send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            header = dict(scope["headers"]).get(b"authorization", b"")
            digest = hashlib.sha256(header.removeprefix(b"Bearer ")).hexdigest()
            if mode == "db":
                pool = (await core.db()).pool
                async with pool.connection() as conn:
                    await conn.execute("SELECT %s::text AS key_hash", (digest,))
            known.setdefault(digest, "bench")
        await app(scope, receive, send)

    return guarded


def _without_reuse_lookup(core: IngressCore) -> None:
    """Submits skip the reuse lookup (one round trip instead of two): what folding the lookup into
    the INSERT's statement would save. Only for loads of new PRs, where the lookup finds nothing."""
    from prreview.store import JobStore

    async def nothing_to_reuse(self: JobStore, *args: Any, **kwargs: Any) -> None:
        return None

    JobStore.find_reusable_job = nothing_to_reuse  # type: ignore[method-assign]


def _without_pool_check() -> None:
    from psycopg_pool import AsyncConnectionPool

    async def unchecked(conn: Any) -> None:
        return None

    AsyncConnectionPool.check_connection = staticmethod(unchecked)  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--http", default="httptools", choices=["httptools", "h11"])
    parser.add_argument("--auth", default="none", choices=["none", "memory", "db"])
    parser.add_argument("--nice", type=int, default=RAY_WORKER_NICENESS, help="added to this process's niceness")
    parser.add_argument("--submit", default="product", choices=["product", "one-statement"])
    parser.add_argument("--pool-check", default="on", choices=["on", "off"])
    args = parser.parse_args()
    os.nice(args.nice)
    if args.pool_check == "off":
        _without_pool_check()
    core = IngressCore(load_settings(), in_serve=False)
    if args.submit == "one-statement":
        _without_reuse_lookup(core)
    app: Any = core.asgi_app()
    if args.auth != "none":
        app = _auth_stand_in(app, core, args.auth)
    uvicorn.run(app, host=args.host, port=args.port, loop=args.loop, http=args.http, access_log=False,
                log_level="warning", lifespan="off")


def start(port: int, *, loop: str = "uvloop", http: str = "httptools", auth: str = "none",
          nice: int = RAY_WORKER_NICENESS, submit: str = "product", pool_check: str = "on",
          env: dict[str, str] | None = None, timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
    """The bare server in a child process, once it answers /readyz (its database pool is open)."""
    process = subprocess.Popen([sys.executable, "-m", "bench._bare_ingress", "--port", str(port), "--loop", loop,
                                "--http", http, "--auth", auth, "--nice", str(nice), "--submit", submit,
                                "--pool-check", pool_check],
                               env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bare ingress exited with status {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"the bare ingress did not answer within {timeout_s:.0f} s")


@contextlib.contextmanager
def running(port: int, **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """`start(port, **options)`, stopped on exit."""
    process = start(port, **options)
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
