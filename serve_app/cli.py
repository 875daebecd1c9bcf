"""`pr-review`: run the service, and talk to it (submit, status, watch, cancel, batch, demo)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown

from prreview.config import Settings, load_settings
from serve_app import cli_logging
from serve_app.cli_batch import register as register_batch
from serve_app.cli_batch import show_cluster
from serve_app.cli_db import register as register_db
from serve_app.cli_keys import register as register_keys
from serve_app.client import APIError, Client, auth_hint, unreachable
from serve_app.events_text import event_line
from serve_app.markdown import review_markdown
from serve_app.terminal import error_text, printable

if TYPE_CHECKING:
    from serve_app.local import LocalStack

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Self-hosted AI reviews of GitHub pull requests on Ray Serve.")
cluster_app = typer.Typer(no_args_is_help=True, help="Kubernetes manifests (cluster/).")
app.add_typer(cluster_app, name="cluster")
console = Console()
err = Console(stderr=True)
log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130
VERBOSE_HELP = "show the libraries' logs (Ray, Serve, HTTP) on stderr"


def fail(message: str, code: int = 1) -> NoReturn:
    """`error: <message>` on stderr, taken literally (it may quote a PR or a model), then exit."""
    err.print(error_text(message), soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def exit_interrupted(message: str) -> NoReturn:
    """`fail` for a Ctrl-C that came while Ray was starting in this process, once what it started is
    stopped: the process ends at once, as Ray's native parts (core worker, gRPC), stopped half-way,
    have crashed in their own finalizers at interpreter exit (exit -11 after the right message)."""
    err.print(error_text(message), soft_wrap=True, highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(EXIT_INTERRUPTED)


def settings_or_fail() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"bad configuration: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}", 2)


def api_failure(exc: APIError, settings: Settings) -> str:
    """An API error as one line; a 401 or 403 also says how to get a key."""
    if exc.status in (401, 403):
        return f"{exc.message} {auth_hint(exc.status, settings)}"
    return exc.message


@contextmanager
def api_session(verbose: bool) -> Iterator[Client]:
    """A client of the API for one command; API errors, an unreachable API and Ctrl-C end the
    command with a one-line reason."""
    cli_logging.configure(verbose=verbose)
    settings = settings_or_fail()
    try:
        with Client.from_settings(settings) as api:
            yield api
    except APIError as exc:
        fail(api_failure(exc, settings))
    except httpx.HTTPError as exc:
        fail(unreachable(exc, settings))
    except KeyboardInterrupt:
        fail("interrupted; what was submitted goes on in the service", EXIT_INTERRUPTED)


def interrupt_once() -> None:
    """The first Ctrl-C raises KeyboardInterrupt; later ones are ignored while everything stops."""
    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


def follow(api: Client, review_id: str) -> dict[str, Any]:
    """Print live progress until the review ends; returns the final resource."""
    for event in api.events(review_id):
        console.print(event_line(event), highlight=False)
    return api.get(review_id)


def finish(job: dict[str, Any]) -> None:
    console.print(Markdown(review_markdown(job)))
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        fail(f"review {job['status']}: {error.get('message', 'no detail')}")


@app.command()
def serve(verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP)) -> None:
    """Start the database (embedded unless DATABASE_URL), Ray and the Serve apps; foreground."""
    settings = settings_or_fail()
    log_file = cli_logging.configure(verbose=verbose, home=settings.home, ray_serve=True)
    from serve_app.local import LocalStack

    if not settings.llm_base_url and not settings.llm_model:
        from serve_app.llm_models import DEFAULT_MODEL, cached_snapshot, download_model

        if cached_snapshot(DEFAULT_MODEL) is None and download_model(DEFAULT_MODEL) is None:
            fail(f"no model to serve: {DEFAULT_MODEL} is not in the Hugging Face cache and cannot be downloaded. "
                 "Set LLM_MODEL to a local model directory, or LLM_BASE_URL to an OpenAI-compatible endpoint "
                 "(`pr-review demo` runs a tiny test model offline).")
    stack = LocalStack(settings)
    stop = threading.Event()
    problem: Callable[[], NoReturn] | None = None  # how the command ends, once everything is stopped
    interrupt_once()
    try:
        stack.start()
        cli_logging.reapply()  # after Ray and Serve added their handlers
        # After ray.init, which installs its own SIGTERM handler: ours lets `finally` stop everything.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        console.print(f"pr-review is serving on {stack.settings.api_url}  (Ray dashboard: {stack.dashboard_url})",
                      highlight=False)
        stop.wait()
    except KeyboardInterrupt:
        log.warning("pr-review serve interrupted while starting", exc_info=True)
        problem = partial(exit_interrupted, "interrupted while starting; everything started is stopped")
    except Exception as exc:
        log.exception("pr-review serve failed")
        problem = partial(fail, f"pr-review could not start: {exc}" + (f" (details: {log_file})" if log_file else ""))
    finally:
        if problem is None:
            console.print("stopping...", highlight=False)
        stopped = stop_quietly(stack)
    if problem is not None:
        problem()
    if not stopped:
        fail("some of what pr-review started did not stop cleanly" + (f"; see {log_file}" if log_file else ""))


def stop_quietly(stack: LocalStack) -> bool:
    """Stop a LocalStack with what Ray prints meanwhile kept off the terminal; False if it failed."""
    try:
        with cli_logging.quiet_streams():
            stack.stop()
    except Exception:
        log.exception("stopping failed")
        return False
    return True


def plain(text: str) -> None:
    """One line of API data (ids, repository names), printed literally."""
    console.print(printable(text), markup=False, highlight=False)


@app.command()
def submit(pr_url: str, wait: bool = typer.Option(False, "--wait", help="follow progress to the end"),
           post: bool = typer.Option(False, "--post", help="publish the review on GitHub"),
           verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP)) -> None:
    """Queue a review of PR_URL and print its id."""
    with api_session(verbose) as api:
        job = api.submit(pr_url, {"post": post} if post else None)
        plain(job["id"] if not wait else f"review {job['id']} ({job['status']})")
        if wait:
            finish(follow(api, job["id"]))


@app.command()
def status(review_id: str = typer.Argument(None, help="a review id; none: the cluster summary"),
           verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP)) -> None:
    """A review's state, or the cluster's queue summary."""
    with api_session(verbose) as api:
        if review_id:
            job = api.get(review_id)
            progress, usage = job["progress"], job["usage"]
            plain(f"{job['id']}  {job['status']}  {job['repo']}#{job['number']}  step={progress['step']} "
                  f"files={progress['files_done']}/{progress['files_total']}  attempts={job['attempts']}  "
                  f"llm_calls={usage['llm_calls']}")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                console.print(Markdown(review_markdown(job)))
        else:
            show_cluster(api)


@app.command()
def watch(review_id: str, verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP)) -> None:
    """Follow a review's progress live, then print it."""
    with api_session(verbose) as api:
        finish(follow(api, review_id))


@app.command()
def cancel(review_id: str, verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP)) -> None:
    """Cancel a queued or running review; its LLM calls stop."""
    with api_session(verbose) as api:
        job = api.cancel(review_id)
        plain(f"{job['id']} {job['status']} (cancel requested)")


@app.command()
def demo(keep_serving: bool = typer.Option(None, "--keep-serving/--exit",
                                           help="stay up after the review (default: when run in a terminal)"),
         llm: str = typer.Option("vllm", "--llm", help="vllm: the in-cluster vLLM app; scripted: a toy reviewer"),
         verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP)) -> None:
    """Everything locally: embedded Postgres, Ray, the apps, a GitHub-shaped server with a sample PR."""
    if llm not in ("vllm", "scripted"):
        fail("--llm is vllm or scripted", 2)
    settings = settings_or_fail()
    log_file = cli_logging.configure(verbose=verbose, home=settings.home, ray_serve=True)
    details = f" (details: {log_file})" if log_file else ""
    from serve_app.demo import run_demo

    interrupt_once()
    try:
        run_demo(console, keep_serving=sys.stdin.isatty() if keep_serving is None else keep_serving, llm=llm)
    except KeyboardInterrupt:
        log.warning("pr-review demo interrupted", exc_info=True)
        exit_interrupted("interrupted; everything the demo started is stopped")
    except APIError as exc:
        log.exception("pr-review demo failed")
        fail(f"the demo's review could not be followed: {api_failure(exc, settings)}{details}")
    except Exception as exc:
        log.exception("pr-review demo failed")
        fail(f"the demo failed: {exc}{details}")


@cluster_app.command("render")
def cluster_render(check: bool = typer.Option(False, "--check", help="exit 1 if cluster/ drifted from "
                                                                    "serve_config.yaml")) -> None:
    """Render serve_config.yaml into the RayService overlays (one source of truth)."""
    from serve_app import cluster_render as render

    raise typer.Exit(render.main(["--check"] if check else []))


register_batch(app)
register_db(app)
register_keys(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
