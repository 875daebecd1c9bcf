"""`pr-review demo`: the whole product on this machine, reviewing a bundled sample PR."""

from __future__ import annotations

import os
import signal
import threading

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel

from prreview.access import local_key_path
from prreview.config import load_settings
from prreview.demo import DemoGitHub, DemoLLM, install_sample_pr
from serve_app import cli_logging
from serve_app.client import Client
from serve_app.events_text import event_line
from serve_app.llm_models import demo_model
from serve_app.local import LocalStack
from serve_app.markdown import review_markdown


def _choose_model(console: Console, llm: str) -> tuple[bool, DemoLLM | None]:
    """Where the demo's reviews come from: (deploy the in-cluster vLLM app?, scripted server)."""
    if os.environ.get("LLM_BASE_URL"):
        console.print(f"model: the OpenAI-compatible endpoint at {os.environ['LLM_BASE_URL']} (LLM_BASE_URL)")
        return False, None
    if llm == "scripted":
        scripted = DemoLLM(latency_s=0.5)
        scripted.start()
        os.environ["LLM_BASE_URL"] = scripted.base_url
        console.print(Panel(
            "This demo's model is a [bold]scripted OpenAI-compatible server[/bold] (a pattern-matching toy "
            "reviewer), not an LLM. Run `pr-review demo` without --llm scripted for vLLM in the cluster.",
            title="note", border_style="yellow"))
        return False, scripted
    if os.environ.get("LLM_MODEL"):
        console.print(f"model: {os.environ['LLM_MODEL']} (LLM_MODEL), served by vLLM through Ray Serve LLM")
        return True, None
    chosen = demo_model(load_settings().ensure_home())
    os.environ["LLM_MODEL"] = chosen.source
    console.print(Panel(f"model: {chosen.label}\nServed by vLLM on the CPU through Ray Serve LLM (/llm/v1).",
                        title="model", border_style="red" if chosen.meaningless else "green"))
    return True, None


def run_demo(console: Console, *, keep_serving: bool, llm: str = "vllm") -> None:
    github = DemoGitHub()
    github.start()
    pr_url = install_sample_pr(github)
    os.environ["GITHUB_API_URL"] = github.url
    os.environ.pop("GITHUB_TOKEN", None)  # the demo never sends a real token anywhere
    with_llm_app, scripted = _choose_model(console, llm)
    settings = load_settings()
    stack = LocalStack(settings, with_llm_app=with_llm_app)
    console.print("starting: embedded PostgreSQL, Ray, the Serve apps" +
                  (" and vLLM (a few minutes on 2 cores)..." if with_llm_app else " (about a minute)..."))
    try:
        stack.start(wait_ready_s=900 if with_llm_app else 180)
        cli_logging.reapply()  # after Ray, Serve and vLLM added their handlers
        console.print(f"web page: {settings.api_url}/   API: {settings.api_url}/v1   "
                      f"Ray dashboard: {stack.dashboard_url}")
        if local_key_path(settings).exists():
            console.print(f"the page asks for an API key: it is in {local_key_path(settings)}", highlight=False)
        console.print(f"reviewing the sample PR {pr_url} (served by a local GitHub-shaped server)")
        with Client.from_settings(settings) as api:
            job = api.submit(pr_url)
            console.print(f"follow it live in a browser: {settings.api_url}/?review={job['id']}")
            for event in api.events(job["id"]):
                console.print(event_line(event), highlight=False)
            job = api.get(job["id"])
        console.print(Markdown(review_markdown(job)))
        if keep_serving:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            console.print(f"still serving on {settings.api_url}; Ctrl-C stops everything.")
            stop.wait()
            console.print("stopping...", highlight=False)
        if job["status"] != "succeeded":
            raise SystemExit(1)
    finally:
        with cli_logging.quiet_streams():  # what Ray prints while it stops is not for the terminal
            stack.stop()
            github.stop()
            if scripted is not None:
                scripted.stop()
