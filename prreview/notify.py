"""Push instead of polling: one LISTEN connection per process, fanned out to whoever waits.

The database NOTIFYs on every job event (channel `pr_review_events`), on every job that enters the
queue (`pr_review_jobs`), on every cancel request (`pr_review_cancel`) and on every freed LLM slot
(`pr_review_llm_slots`); see migration 0003 and queries.sql. A `Listener` holds one dedicated
connection for the channels its process needs and calls the registered callbacks on the event loop.

Notifications sent while the connection is down (a database failover) are lost, so after every
reconnect the listener calls `on_reconnect`: waiters then re-read the database once. Waiters also
keep a slow poll as a fallback, never as the main path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import psycopg

from prreview.db import CONNECT_TIMEOUT_S, TRANSIENT_ERRORS

log = logging.getLogger(__name__)

EVENTS = "pr_review_events"
JOBS = "pr_review_jobs"
CANCEL = "pr_review_cancel"
LLM_SLOTS = "pr_review_llm_slots"

Callback = Callable[[str], None]

# How long `notifies()` waits before the connection is probed with a query (a silent server is
# noticed within this), and the longest pause between reconnect attempts.
_PROBE_S = 10.0
_MAX_BACKOFF_S = 2.0


class Listener:
    """LISTENs on a few channels and calls `callbacks[channel](payload)` for each notification.

    `start()` opens the connection in a background task; `stop()` closes it. Callbacks run on the
    event loop and must not block. Every (re)connection calls each `on_reconnect` callback, since
    notifications sent while the listener was away are lost.
    """

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._callbacks: dict[str, list[Callback]] = defaultdict(list)
        self._on_reconnect: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def subscribe(self, channel: str, callback: Callback) -> None:
        """Register before `start()`: the channels are LISTENed on when the connection opens."""
        self._callbacks[channel].append(callback)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._on_reconnect.append(callback)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self.connected.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:
                log.warning("database listener disconnected (%s); reconnecting", type(exc).__name__)
            except Exception:  # a bug in a callback must not end the listening for the whole process
                log.exception("database listener failed; reconnecting")
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3) as conn:
            for channel in self._callbacks:
                await conn.execute(f"LISTEN {channel}")  # channel names are this module's constants
            self.connected.set()
            for reconnected in self._on_reconnect:
                reconnected()
            while True:
                async for note in conn.notifies(timeout=_PROBE_S):
                    for callback in self._callbacks.get(note.channel, ()):
                        callback(note.payload)
                await conn.execute("SELECT 1")  # quiet for a while: is the server still there?


class Signal:
    """Wakes every coroutine waiting for a key (a job id, or "" for anything), with a timeout that
    is the slow polling fallback. Keys with no waiter cost nothing."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, key: str = "") -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    def notify_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._waiters.values())

    @contextlib.asynccontextmanager
    async def watch(self, key: str = "") -> AsyncIterator[asyncio.Event]:
        """`async with signal.watch(key) as woken:` then `await woken.wait()` (re-arm with clear)."""
        event = asyncio.Event()
        self._waiters[key].add(event)
        try:
            yield event
        finally:
            self._waiters[key].discard(event)
            if not self._waiters[key]:
                del self._waiters[key]


async def wait(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for `event` (then clear it) at most `timeout_s`; True when it was set."""
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        return False
    event.clear()
    return True

