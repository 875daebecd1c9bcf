"""`pr-review`: run the service, and talk to it (submit, status, watch, cancel, batch, demo)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import typer
from rich.console import Console
from rich.markdown import Markdown

from prreview.config import load_settings
from serve_app.cli_batch import register as register_batch
from serve_app.cli_batch import show_cluster
from serve_app.client import APIError, Client
from serve_app.events_text import describe
from serve_app.markdown import review_markdown

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Self-hosted AI reviews of GitHub pull requests on Ray Serve.")
cluster_app = typer.Typer(no_args_is_help=True, help="Kubernetes manifests (cluster/).")
app.add_typer(cluster_app, name="cluster")
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code)


def client() -> Client:
    return Client(load_settings().api_url)


def follow(api: Client, review_id: str) -> dict[str, Any]:
    """Print live progress until the review ends; returns the final resource."""
    for event in api.events(review_id):
        console.print(f"[dim]{event.get('at', '')[11:19]}[/dim] {describe(event)}", highlight=False)
    return api.get(review_id)


def finish(job: dict[str, Any]) -> None:
    console.print(Markdown(review_markdown(job)))
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        fail(f"review {job['status']}: {error.get('message', 'no detail')}")


@app.command()
def serve() -> None:
    """Start the database (embedded unless DATABASE_URL), Ray and the Serve apps; foreground."""
    from serve_app.local import LocalStack

    settings = load_settings()
    if not settings.llm_base_url and not settings.llm_model:
        from serve_app.llm_models import DEFAULT_MODEL, cached_snapshot, download_model

        if cached_snapshot(DEFAULT_MODEL) is None and download_model(DEFAULT_MODEL) is None:
            fail(f"no model to serve: {DEFAULT_MODEL} is not in the Hugging Face cache and cannot be downloaded. "
                 "Set LLM_MODEL to a local model directory, or LLM_BASE_URL to an OpenAI-compatible endpoint "
                 "(`pr-review demo` runs a tiny test model offline).")
    stack = LocalStack(settings)
    stop = threading.Event()
    try:
        stack.start()
        # After ray.init, which installs its own SIGTERM handler: ours lets `finally` stop everything.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        console.print(f"pr-review is serving on {stack.settings.api_url}  (Ray dashboard: {stack.dashboard_url})")
        stop.wait()
    finally:
        console.print("stopping...")
        stack.stop()


@app.command()
def submit(pr_url: str, wait: bool = typer.Option(False, "--wait", help="follow progress to the end"),
           post: bool = typer.Option(False, "--post", help="publish the review on GitHub")) -> None:
    """Queue a review of PR_URL and print its id."""
    with client() as api:
        try:
            job = api.submit(pr_url, {"post": post} if post else None)
            console.print(job["id"] if not wait else f"review {job['id']} ({job['status']})", highlight=False)
            if wait:
                finish(follow(api, job["id"]))
        except APIError as exc:
            fail(exc.message)


@app.command()
def status(review_id: str = typer.Argument(None, help="a review id; none: the cluster summary")) -> None:
    """A review's state, or the cluster's queue summary."""
    with client() as api:
        try:
            if review_id:
                job = api.get(review_id)
                progress, usage = job["progress"], job["usage"]
                console.print(f"{job['id']}  {job['status']}  {job['repo']}#{job['number']}  step={progress['step']} "
                              f"files={progress['files_done']}/{progress['files_total']}  attempts={job['attempts']}  "
                              f"llm_calls={usage['llm_calls']}", highlight=False)
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    console.print(Markdown(review_markdown(job)))
            else:
                show_cluster(api)
        except APIError as exc:
            fail(exc.message)


@app.command()
def watch(review_id: str) -> None:
    """Follow a review's progress live, then print it."""
    with client() as api:
        try:
            finish(follow(api, review_id))
        except APIError as exc:
            fail(exc.message)


@app.command()
def cancel(review_id: str) -> None:
    """Cancel a queued or running review; its LLM calls stop."""
    with client() as api:
        try:
            job = api.cancel(review_id)
            console.print(f"{job['id']} {job['status']} (cancel requested)", highlight=False)
        except APIError as exc:
            fail(exc.message)


@app.command()
def demo(keep_serving: bool = typer.Option(None, "--keep-serving/--exit",
                                           help="stay up after the review (default: when run in a terminal)"),
         llm: str = typer.Option("vllm", "--llm", help="vllm: the in-cluster vLLM app; scripted: a toy reviewer")
         ) -> None:
    """Everything locally: embedded Postgres, Ray, the apps, a GitHub-shaped server with a sample PR."""
    from serve_app.demo import run_demo

    if llm not in ("vllm", "scripted"):
        fail("--llm is vllm or scripted")
    run_demo(console, keep_serving=sys.stdin.isatty() if keep_serving is None else keep_serving, llm=llm)


@cluster_app.command("render")
def cluster_render(check: bool = typer.Option(False, "--check", help="exit 1 if cluster/ drifted from "
                                                                    "serve_config.yaml")) -> None:
    """Render serve_config.yaml into the RayService overlays (one source of truth)."""
    from serve_app import cluster_render as render

    raise typer.Exit(render.main(["--check"] if check else []))


register_batch(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
