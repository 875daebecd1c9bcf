"""Where log records go when `pr-review` runs: the terminal shows the command's own lines, and
the libraries' logs go to a file (or, with `--verbose`, to stderr).

Libraries print to the terminal on their own unless stopped: Ray and Ray Serve give their loggers
stderr handlers, Ray Serve LLM's import replaces the root logger's handlers with a JSON one at INFO
(so every httpx request printed a JSON line), torch and transformers add handlers of their own,
and Ray's error thread prints raylet messages on stdout while Serve shuts down. `configure()`
routes every logger through one root handler; `reapply()` does it again after code that adds
handlers later; `quiet_streams()` keeps stdout and stderr off the terminal during shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE = Path("logs") / "pr-review.log"  # under PR_REVIEW_HOME


@dataclass(frozen=True)
class _Routing:
    verbose: bool
    log_file: Path | None


_routing: _Routing | None = None  # what configure() chose, for reapply()


class _CLIHandler(logging.Handler):
    """Marks the one root handler that this module installs."""


class _StderrHandler(_CLIHandler, logging.StreamHandler):
    def __init__(self) -> None:
        logging.StreamHandler.__init__(self)

    @property
    def stream(self) -> TextIO:  # sys.stderr at emit time: quiet_streams() or a test may swap it
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class _FileHandler(_CLIHandler, logging.FileHandler):
    def __init__(self, path: Path) -> None:
        logging.FileHandler.__init__(self, path, encoding="utf-8", delay=True)


class _NullHandler(_CLIHandler, logging.NullHandler):
    pass


def log_file_path(home: Path) -> Path:
    return home / LOG_FILE


def configure(*, verbose: bool = False, home: Path | None = None, ray_serve: bool = False) -> Path | None:
    """Route all logging for this command; returns the log file, if any.

    verbose: library logs (INFO and up) on stderr. Otherwise WARNING and up go to
    `$PR_REVIEW_HOME/logs/pr-review.log` when `home` is given, else nowhere.
    ray_serve: this command starts Ray Serve here; let Ray Serve LLM install its logging now (it
    does once per process, on import) so that it cannot take over the terminal later."""
    global _routing
    log_file = None
    if not verbose and home is not None:
        log_file = log_file_path(home)
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            log_file = None
    if ray_serve:
        with contextlib.suppress(ImportError):
            import ray.llm._internal.serve  # noqa: F401  (its import configures the root logger)
    _routing = _Routing(verbose, log_file)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _CLIHandler)]:  # an earlier configure()'s
        root.removeHandler(handler)
        handler.close()
    logging.captureWarnings(True)  # warnings.warn() from libraries: through logging, not on stderr
    reapply()
    return log_file


def reapply() -> None:
    """Route every logger through the root handler again: removes console handlers that libraries
    added since `configure()`. A no-op before `configure()`."""
    if _routing is None:
        return
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _CLIHandler)]
    if not ours:
        handler: logging.Handler
        if _routing.verbose:
            handler = _StderrHandler()
        elif _routing.log_file is not None:
            handler = _FileHandler(_routing.log_file)
        else:
            handler = _NullHandler()
        handler.setLevel(logging.INFO if _routing.verbose else logging.WARNING)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(logging.INFO if _routing.verbose else logging.WARNING)
    loggers = [root] + [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for logger in loggers:
        for handler in list(logger.handlers):
            if _is_console(handler):
                logger.removeHandler(handler)
                logger.propagate = True


def _is_console(handler: logging.Handler) -> bool:
    if isinstance(handler, _CLIHandler | logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
        return False
    return handler.stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)


@contextlib.contextmanager
def quiet_streams() -> Iterator[None]:
    """stdout and stderr into the log file (or nowhere) for the block, unless verbose: what Ray
    prints while it stops is not for the terminal."""
    if _routing is None or _routing.verbose:
        yield
        return
    target = _routing.log_file if _routing.log_file is not None else Path(os.devnull)
    with open(target, "a", encoding="utf-8") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        yield
