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
from serve_app.llm_models import demo_model
from serve_app.local import LocalStack
from serve_app.markdown import review_markdown


def _choose_model(console: Console, llm: str) -> tuple[bool, ScriptedLLM | None]:
    """Where the demo's reviews come from: (deploy the in-cluster vLLM app?, scripted server)."""
    if os.environ.get("LLM_BASE_URL"):
        console.print(f"model: the OpenAI-compatible endpoint at {os.environ['LLM_BASE_URL']} (LLM_BASE_URL)")
        return False, None
    if llm == "scripted":
        scripted = ScriptedLLM(latency_s=0.5)
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
    github = FakeGitHub()
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
        console.print(f"web page: {settings.api_url}/   API: {settings.api_url}/v1   "
                      f"Ray dashboard: {stack.dashboard_url}")
        console.print(f"reviewing the sample PR {pr_url} (served by a local GitHub-shaped server)")
        with Client(settings.api_url) as api:
            job = api.submit(pr_url)
            console.print(f"follow it live in a browser: {settings.api_url}/?review={job['id']}")
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
