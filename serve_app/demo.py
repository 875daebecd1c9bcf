"""`pr-review demo`: the whole product on this machine, reviewing a bundled sample PR."""

from __future__ import annotations

import os
import signal
import threading

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel

from prreview.config import load_settings
from prreview.fakes.github import FakeGitHub
from prreview.fakes.llm import ScriptedLLM
from prreview.fakes.sample_pr import install_sample_pr
from serve_app.client import Client
from serve_app.events_text import describe
from serve_app.local import LocalStack
from serve_app.markdown import review_markdown


def run_demo(console: Console, *, keep_serving: bool) -> None:
    github = FakeGitHub()
    github.start()
    pr_url = install_sample_pr(github)
    os.environ["GITHUB_API_URL"] = github.url
    os.environ.pop("GITHUB_TOKEN", None)  # the demo never sends a real token anywhere
    scripted: ScriptedLLM | None = None
    if not os.environ.get("LLM_BASE_URL"):
        scripted = ScriptedLLM(latency_s=0.5)
        scripted.start()
        os.environ["LLM_BASE_URL"] = scripted.base_url
        console.print(Panel(
            "This demo's model is a [bold]scripted OpenAI-compatible server[/bold] (a pattern-matching toy "
            "reviewer), not an LLM.\nSet LLM_BASE_URL to any OpenAI-compatible endpoint to use a real model.",
            title="note", border_style="yellow"))
    settings = load_settings()
    stack = LocalStack(settings, with_llm_app=False)
    console.print("starting: embedded PostgreSQL, Ray, the Serve apps (about a minute on 2 cores)...")
    try:
        stack.start()
        console.print(f"API: {settings.api_url}   Ray dashboard: {stack.dashboard_url}")
        console.print(f"reviewing the sample PR {pr_url} (served by a local GitHub-shaped server)")
        with Client(settings.api_url) as api:
            job = api.submit(pr_url)
            for event in api.events(job["id"]):
                console.print(f"[dim]{event.get('at', '')[11:19]}[/dim] {describe(event)}", highlight=False)
            job = api.get(job["id"])
        console.print(Markdown(review_markdown(job)))
        if keep_serving:
            console.print(f"still serving on {settings.api_url}; Ctrl-C stops everything.")
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
        if job["status"] != "succeeded":
            raise SystemExit(1)
    finally:
        stack.stop()
        github.stop()
        if scripted is not None:
            scripted.stop()
