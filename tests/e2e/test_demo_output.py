"""`pr-review demo` as a new user runs it: a fresh PR_REVIEW_HOME, the embedded database, the
real vLLM engine (the scripted model where only Ctrl-C is tested). The terminal shows progress and
the review, and nothing else: no library log lines (JSON or plain), no `--- Logging error ---`, no
traceback, no progress bar of a library; Ctrl-C ends it with one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app.local import free_port
from tests.helpers import user_env

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("without_stack")]

PR_REVIEW = Path(sys.executable).with_name("pr-review")


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh PR_REVIEW_HOME outside pytest's temporary root: run as root, the embedded database
    runs as another user, who needs the path's folders open, and a pytest session starting meanwhile
    closes its root to its owner again (mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pr-review-demo-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def demo_env(home: Path) -> dict[str, str]:
    # Free ports instead of 8000/8265, so that another stack on this machine cannot collide. A
    # shell whose RAY_ADDRESS names another cluster (here one that is not there): the demo runs its own.
    return user_env(PR_REVIEW_HOME=str(home), PR_REVIEW_HTTP_PORT=str(free_port()),
                    PR_REVIEW_DASHBOARD_PORT=str(free_port()), COLUMNS="100", RAY_ADDRESS="127.0.0.1:9")


def assert_only_the_clis_lines(stdout: str, stderr: str) -> None:
    for name, text in (("stdout", stdout), ("stderr", stderr)):
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("{"):
                with pytest.raises(ValueError):
                    json.loads(stripped)  # a JSON object on a line of its own is a log record
            assert not re.match(r"^(INFO|WARNING|ERROR|DEBUG)\b|^\d{4}-\d\d-\d\d[ T][\d:,.]+\s", stripped), \
                f"a library log line on {name}: {line!r}"
        for marker in ("Logging error", "Traceback", "(raylet)"):
            assert marker not in text, f"{marker!r} on {name}:\n{text[-3000:]}"
        assert not re.search(r"\b\w*Warning: ", text), f"a Python warning on {name}:\n{text[-3000:]}"
        assert not re.search(r"\d+%\|", text), f"a library's progress bar on {name}:\n{text[-3000:]}"


def test_demo_prints_progress_and_the_review_only(home: Path) -> None:
    """Exactly what `make demo` runs, offline: the tiny model built on the spot, served by vLLM."""
    started = time.monotonic()
    done = subprocess.run([str(PR_REVIEW), "demo"], env={**demo_env(home), "HF_HUB_OFFLINE": "1"},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    assert_only_the_clis_lines(out, err)
    assert err.strip() == "", err

    # What runs, said once; progress; then the review's Markdown as rich renders it.
    banner = " ".join(out.replace("│", " ").split())  # the panel's text, unwrapped
    assert "runs a tiny TEST model" in banner and "Served by vLLM on the CPU through Ray Serve LLM" in banner
    assert "starting: embedded PostgreSQL, Ray, the Serve apps" in out
    assert re.search(r"^\d\d:\d\d:\d\d queued$", out, re.M)
    assert re.search(r"^\d\d:\d\d:\d\d succeeded$", out, re.M)
    assert re.search(r"Review of acme/payments#\d+", out)
    for heading in ("Verdict:", "Summary", "Findings ("):
        assert heading in out
    # The libraries' logs went to the log file instead.
    assert (home / "logs" / "pr-review.log").exists()
    assert time.monotonic() - started < 900


def _start(args: list[str], home: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    # Its own process group, which gets the SIGINT, as a terminal's Ctrl-C sends it to the foreground group.
    return subprocess.Popen([str(PR_REVIEW), *args], env={**demo_env(home), **(env or {})}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout_s: float) -> list[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return seen
    proc.kill()
    raise AssertionError(f"no line like {pattern!r}:\n{''.join(seen)[-3000:]}")


def test_ctrl_c_of_a_serving_demo_stops_with_one_line(home: Path) -> None:
    proc = _start(["demo", "--llm", "scripted", "--keep-serving"], home)
    before = _wait_for_line(proc, r"still serving on", timeout_s=600)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-2000:]}"
    assert out.strip() == "stopping...", out
    assert err.strip() == "", err
    assert_only_the_clis_lines("".join(before) + out, err)


def test_ctrl_c_while_starting_stops_everything_with_one_line(home: Path) -> None:
    proc = _start(["demo", "--llm", "scripted", "--exit"], home)
    before = _wait_for_line(proc, r"^starting: ", timeout_s=120)
    time.sleep(4)  # in the middle of the database's and Ray's start
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-2000:]}"
    assert err.strip() == "error: interrupted; everything the demo started is stopped", err
    assert_only_the_clis_lines("".join(before) + out, err)
    # Nothing it started is left running: the embedded database stopped with it.
    assert not (home / "postgres" / "postmaster.pid").exists()


def test_ctrl_c_of_serve_stops_with_one_line(home: Path) -> None:
    """`pr-review serve` on an embedded database: its own lines only, and Ctrl-C prints one more."""
    # Any OpenAI-compatible URL will do: nothing is reviewed.
    env = {"LLM_BASE_URL": "http://127.0.0.1:9/v1", "LLM_MODEL": "none"}
    proc = _start(["serve"], home, env)
    before = _wait_for_line(proc, r"^pr-review is serving on http://127\.0\.0\.1:\d+ ", timeout_s=600)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-2000:]}"
    assert len(before) == 1 and out.strip() == "stopping...", (before, out)
    assert err.strip() == "", err
    assert_only_the_clis_lines("".join(before) + out, err)
    assert not (home / "postgres" / "postmaster.pid").exists()
