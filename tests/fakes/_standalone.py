"""Foreground mode for `python -m tests.fakes.<fake>`: serve until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import threading

from prreview.demo._server import BackgroundServer


def wait_for_signal(server: BackgroundServer) -> None:
    """Block until SIGINT/SIGTERM (or the server dies)."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            if not server.running:
                raise SystemExit("the server stopped unexpectedly")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
