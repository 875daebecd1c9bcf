"""The CLI's batch command and cluster summary (`pr-review batch`, `pr-review status` with no id)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prreview.config import load_settings
from serve_app import cli_logging
from serve_app.batch import STATUSES, STYLES, BatchError, EmptyBatch, run_batch
from serve_app.client import APIError, Client, auth_hint, unreachable
from serve_app.terminal import error_text, printable

console = Console()
err = Console(stderr=True)

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int) -> NoReturn:
    err.print(error_text(message), soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def batch(
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="PR URLs, one a line ('-' reads stdin); "
                                          "blank lines and # comments are skipped")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", file_okay=False, help="result folder (default: $PR_REVIEW_HOME/batches/<FILE name>)",
    )] = None,
    post: Annotated[bool, typer.Option("--post", help="publish each review on GitHub")] = False,
    poll_s: Annotated[float, typer.Option("--poll-s", min=0.1, help="seconds between progress checks")] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show the libraries' logs on stderr")] = False,
) -> None:
    """Review every PR listed in FILE: live progress, one .md and .json per PR, a summary table.

    Run the same command again to resume: finished reviews are reused, never repeated."""
    cli_logging.configure(verbose=verbose)
    try:
        settings = load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"bad configuration: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}", EXIT_BAD_INPUT)
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {source}: {exc}", EXIT_BAD_INPUT)
    out_dir = out or settings.home / "batches" / ("stdin" if source == "-" else Path(source).stem or "batch")
    with Client.from_settings(settings) as api:
        try:
            summary = run_batch(api, text.splitlines(), out_dir, console,
                                options={"post": True} if post else None, poll_s=poll_s)
        except EmptyBatch as exc:
            _fail(str(exc), EXIT_BAD_INPUT)
        except (APIError, BatchError) as exc:
            cause = exc if isinstance(exc, APIError) else exc.__cause__
            if isinstance(cause, APIError) and cause.status in (401, 403):
                _fail(f"{cause.message} {auth_hint(cause.status, settings)} (API: {settings.api_url})", 1)
            _fail(f"{exc.message if isinstance(exc, APIError) else exc} (API: {settings.api_url})", 1)
        except httpx.HTTPError as exc:
            _fail(unreachable(exc, settings), 1)
        except KeyboardInterrupt:
            _fail("interrupted; the reviews go on in the service: run the same command again to resume",
                  EXIT_INTERRUPTED)
    if summary["exit_status"]:
        bad = [r for r in summary["reviews"] if r["status"] in ("failed", "cancelled")]
        _fail(f"{len(bad)} of {len(summary['reviews'])} review(s) did not succeed "
              f"(see {out_dir / 'summary.md'})", summary["exit_status"])


def show_cluster(api: Client) -> None:
    """Print the cluster summary: queue, replicas per deployment, recent failures."""
    info = api.cluster()
    queue = info["queue"]
    console.print("queue: " + "  ".join(f"{k}={queue[k]}" for k in STATUSES), highlight=False)
    table = Table(title="Serve deployments")
    for column in ("application", "deployment", "status", "replicas"):
        table.add_column(column)
    for app_name, app in sorted(info["applications"].items()):
        for name, dep in sorted(app["deployments"].items()):
            replicas = ", ".join(f"{n} {state.lower()}" for state, n in sorted(dep["replicas"].items()))
            table.add_row(escape(f"{app_name} ({app['status'].lower()})"), escape(name),
                          escape(dep["status"].lower()), escape(replicas or "none"))
    if info["applications"]:
        console.print(table)
    else:
        console.print("Serve deployments: not reported (the API runs outside Ray Serve)", highlight=False)
    failures = info["recent_failures"]
    console.print(f"recent failures: {len(failures) or 'none'}", highlight=False)
    for failure in failures:
        error = failure.get("error") or {}
        style = STYLES["failed"]
        line = escape(printable(f"  {(failure.get('finished_at') or '')[:19]}  {failure['id']}  {failure['pr_url']}  "))
        console.print(f"{line}[{style}]{escape(printable(error.get('code')))}[/{style}]: "
                      f"{escape(printable(error.get('message', '')))}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
