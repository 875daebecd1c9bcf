"""CPU-bound steps out of the event loop: a few worker processes, each step with a hard timeout.

An agent replica runs several reviews, their heartbeats and their database calls on one event
loop. A step that computes for seconds (a backtracking regular expression, the diff of a huge
file, tokenizing it) stops all of them: leases expire and every review on the replica loses an
attempt. A thread does not help, since Python's `re` (and any pure-Python loop) holds the GIL
while it runs. So such steps run in another process, and one that runs past its time is killed.

Why a `pebble.ProcessPool` with the `forkserver` start method, and not a Ray task: it works the
same in a Serve replica, in the CLI and in tests (one code path); it needs no free CPU in the Ray
cluster (a task could queue behind reviews on a small cluster) and no worker start per call; a
step's input goes through a local pipe, not the object store; and a timed-out step is killed
(SIGTERM, then SIGKILL) and its worker replaced at once. `forkserver`, because the caller is a
Ray worker with many threads, where a plain `fork` is unsafe: the fork server is a fresh,
single-threaded interpreter that imports `PRELOAD` once; each worker is forked from it in
milliseconds, also after a kill.

The pool is created on first use, once per process (`shared_pool()`); nothing is started when a
`CpuPool` is made. Functions sent to it must be importable by name (module level) and their
arguments picklable.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError as FutureCancelled
from typing import Any, TypeVar

import psutil
from pebble import ProcessExpired, ProcessPool

log = logging.getLogger(__name__)

__all__ = ["CpuPool", "CpuStepFailed", "CpuStepTimeout", "run_cpu", "shared_pool"]

DEFAULT_WORKERS = 2
OWNER_CHECK_S = 1.0  # how often a worker checks that the process it works for is still there
PRELOAD = ("graph.compute",)  # imported once by the fork server, so that workers start ready

T = TypeVar("T")


class CpuStepFailed(Exception):
    """A step sent to a worker process did not return: its worker died, or it was refused."""


class CpuStepTimeout(CpuStepFailed, TimeoutError):
    """A step ran past its timeout; its worker process was killed."""

    def __init__(self, name: str, timeout_s: float) -> None:
        super().__init__(f"{name} did not finish within {timeout_s:g} s")
        self.timeout_s = timeout_s


class CpuPool:
    """Worker processes for CPU-bound steps; `await pool.run(fn, *args, timeout_s=...)`."""

    def __init__(self, workers: int = DEFAULT_WORKERS, *, preload: tuple[str, ...] = PRELOAD) -> None:
        self.workers = workers
        self.preload = preload
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()

    def _get(self) -> ProcessPool:
        with self._lock:
            if self._pool is None or not self._pool.active:
                context = multiprocessing.get_context("forkserver")
                # "__main__" first: the server imports the main module once (as `__mp_main__`, so
                # its `if __name__ == "__main__":` block does not run), and forked workers skip it.
                context.set_forkserver_preload(["__main__", *self.preload])
                owner = psutil.Process()
                pool = ProcessPool(max_workers=self.workers, context=context, initializer=_watch_owner,
                                   initargs=(owner.pid, owner.create_time()))
                pool.active  # noqa: B018 - starts the workers (and the fork server): seconds, the first time
                self._pool = pool
            return self._pool

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` in a worker process. Raises `CpuStepTimeout` when it runs longer than
        `timeout_s` seconds (the worker is killed), `CpuStepFailed` when the worker dies or the
        arguments cannot be sent, and whatever `fn` raises. Cancelling the caller kills the step."""
        name = getattr(fn, "__qualname__", repr(fn))
        pool = self._pool
        if pool is None or not pool.active:  # starting the workers waits on them: not on the loop
            pool = await asyncio.to_thread(self._get)
        future = pool.schedule(fn, args=args, kwargs=kwargs, timeout=timeout_s)
        try:
            return await asyncio.wrap_future(future)
        except TimeoutError as exc:
            raise CpuStepTimeout(name, timeout_s) from exc
        except ProcessExpired as exc:
            raise CpuStepFailed(f"{name}: its worker process died ({exc})") from exc
        except FutureCancelled as exc:  # the pool was stopped under it
            raise CpuStepFailed(f"{name}: the worker pool stopped") from exc

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            pool.join(timeout=5)


def _watch_owner(pid: int, created: float) -> None:
    """In each worker: end it when the process it works for is gone (a SIGKILLed replica), since
    a worker's parent is the fork server, which lives on while any worker does."""

    def watch() -> None:
        while True:
            time.sleep(OWNER_CHECK_S)
            try:
                alive = psutil.Process(pid).create_time() == created
            except psutil.Error:
                alive = False
            if not alive:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


_shared: CpuPool | None = None
_shared_lock = threading.Lock()


def shared_pool(workers: int | None = None) -> CpuPool:
    """This process's pool (its workers start on the first step, and stop when the process exits).
    `workers` sets its size, when given before its first step."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = CpuPool()
            atexit.register(_shared.close)
        if workers is not None:
            _shared.workers = workers
        return _shared


async def run_cpu(fn: Callable[..., T], *args: Any, timeout_s: float, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` in one of this process's worker processes, killed after `timeout_s` seconds."""
    return await shared_pool().run(fn, *args, timeout_s=timeout_s, **kwargs)
