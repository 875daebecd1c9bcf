"""The event-loop lag watcher every replica runs: a loop blocked for a while shows as that much lag."""

from __future__ import annotations

import asyncio
import time

from prreview.metrics import watch_event_loop_lag


async def test_a_blocked_loop_shows_as_lag() -> None:
    lags: list[float] = []
    watcher = watch_event_loop_lag(0.02, on_lag=lags.append)
    try:
        while len(lags) < 3:
            await asyncio.sleep(0.01)
        time.sleep(0.3)  # what a backtracking regex on the loop did: nothing else runs meanwhile
        seen = len(lags)
        while len(lags) == seen:
            await asyncio.sleep(0.01)
    finally:
        watcher.cancel()
    assert watcher.get_name() == "event-loop-lag"
    assert max(lags) >= 0.25  # a lower bound: the block lasted 0.3 s, the watcher sleeps 0.02 s
