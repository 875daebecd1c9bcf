"""Tells an agent replica that Serve has begun stopping it (scale-in, rolling update).

Serve has no public hook for this: it calls the user's `__del__` only after in-flight requests
have ended, which for a review can take minutes. So the start of the replica's
`perform_graceful_shutdown` is wrapped to set an event the agent's drain watcher reads. Kept in
its own module so that Serve's pickling of the deployment class never captures the event.
"""

from __future__ import annotations

import threading
from typing import Any

_STOPPING = threading.Event()


def stopping() -> bool:
    return _STOPPING.is_set()


def install_hook() -> None:
    from ray.serve._private.replica import Replica

    original = Replica.perform_graceful_shutdown
    if getattr(original, "_pr_review_drain_hook", False):
        return

    async def perform_graceful_shutdown(self: Any, *args: Any, **kwargs: Any) -> Any:
        _STOPPING.set()
        return await original(self, *args, **kwargs)

    perform_graceful_shutdown._pr_review_drain_hook = True  # type: ignore[attr-defined]
    Replica.perform_graceful_shutdown = perform_graceful_shutdown  # type: ignore[method-assign]
