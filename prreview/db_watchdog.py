"""Stops the embedded PostgreSQL once the `pr-review` process that started it is gone, even when
that process was SIGKILLed (its own clean-up never ran then).

    python -m prreview.db_watchdog PARENT_PID PR_REVIEW_HOME
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from prreview.config import Settings
from prreview.db import stop_embedded_postgres

POLL_S = 0.5


def start(settings: Settings, parent_pid: int) -> subprocess.Popen[bytes]:
    """A detached watchdog for `parent_pid`; it outlives the parent by design."""
    return subprocess.Popen([sys.executable, "-m", __name__, str(parent_pid), str(settings.home)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def wait_for_previous(settings: Settings, timeout_s: float = 15.0) -> None:
    """Let a watchdog whose parent already died finish stopping the server before a new start
    reuses it (a quick restart after a SIGKILL)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = [p for p in psutil.process_iter(["cmdline"])
                   if __name__ in " ".join(p.info["cmdline"] or []) and str(settings.home) in (p.info["cmdline"] or [])]
        if not pending:
            return
        time.sleep(POLL_S)


def main(argv: list[str]) -> None:
    parent, home = int(argv[0]), Path(argv[1])
    while psutil.pid_exists(parent) and psutil.Process(parent).status() != psutil.STATUS_ZOMBIE:
        time.sleep(POLL_S)
    stop_embedded_postgres(Settings(home=home))


if __name__ == "__main__":
    main(sys.argv[1:])
