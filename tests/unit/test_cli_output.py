"""What the CLI prints from a PR or a model is printed literally: rich markup in a file name, a
title or a summary neither crashes `pr-review watch` nor styles the terminal, and control
characters are shown, not obeyed. API failures end in one line; 401 and 403 say how to get a key."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from rich.markdown import Markdown
from typer.testing import CliRunner

from serve_app import cli, cli_batch, cli_logging
from serve_app.client import APIError
from serve_app.events_text import describe, event_line
from serve_app.markdown import review_markdown
from serve_app.terminal import printable

PATH = "x[/bold].py"
TITLE = "[red]boom"
LINK = "[link=https://evil.example]click here[/link]"
ESCAPES = "\x1b[2J\x1b]8;;https://evil.example\x1b\\"  # clear the screen; an OSC 8 hyperlink


def job(status: str = "succeeded", **changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "id": "r-1", "pr_url": "https://github.com/acme/shop/pull/7", "repo": "acme/shop", "number": 7,
        "head_sha": "0123456789abcdef", "status": status, "attempts": 1,
        "created_at": "2026-12-01T10:00:00+00:00", "updated_at": "2026-12-01T10:01:00+00:00",
        "progress": {"step": "done", "files_total": 1, "files_done": 1},
        "usage": {"llm_calls": 2, "prompt_tokens": 100, "completion_tokens": 20},
        "review": {
            "summary": f"Summary with {LINK} and [bold]markup[/bold] {ESCAPES}.", "verdict": "comment",
            "findings": [{"path": PATH, "line": 3, "side": "RIGHT", "severity": "major", "category": "[/]",
                          "title": TITLE, "body": f"Body {LINK}", "suggestion": "print('[/bold]')"}],
            "files_reviewed": [PATH], "files_skipped": [{"path": "[b]bin.png", "reason": "binary [/i]"}],
            "model": "m[/x]",
        },
        "error": None,
    }
    resource.update(changes)
    return resource


EVENTS = [
    {"kind": "queued", "at": "2026-12-01T10:00:00+00:00"},
    {"kind": "group_done", "paths": [PATH, TITLE], "findings": 1, "at": "2026-12-01T10:00:05+00:00"},
    {"kind": "requeued", "reason": f"replica lost {LINK}", "at": "2026-12-01T10:00:06+00:00"},
    {"kind": "failed", "error": {"code": "llm_error", "message": f"model said {ESCAPES}[/red]"},
     "at": "2026-12-01T10:00:07+00:00"},
]


def recording() -> Console:
    return Console(file=io.StringIO(), width=200, color_system=None, record=True)


# --- the printing functions ---------------------------------------------------------------------


def test_event_lines_are_literal() -> None:
    console = recording()
    for event in EVENTS:
        console.print(event_line(event), highlight=False)
    text = console.export_text()
    assert f"10:00:05 reviewed {PATH}, {TITLE}: 1 finding(s)" in text
    assert f"re-queued: replica lost {LINK}" in text
    assert "model said \\x1b[2J\\x1b]8;;https://evil.example\\x1b\\[/red]" in text
    assert "\x1b" not in console.file.getvalue()  # type: ignore[attr-defined]


def test_review_markdown_renders_markup_in_pr_and_model_text_literally() -> None:
    markdown = review_markdown(job())
    assert "\x1b" not in markdown and "\\x1b[2J" in markdown
    console = recording()
    console.print(Markdown(markdown))  # rich's Markdown does not parse console markup
    text = console.export_text()
    for literal in (PATH, TITLE, "[link=https://evil.example]click here[/link]", "[bold]markup[/bold]",
                    "[b]bin.png", "binary [/i]", "m[/x]", "print('[/bold]')"):
        assert literal in text, literal
    assert "\x1b" not in console.file.getvalue()  # type: ignore[attr-defined]


def test_printable_shows_control_characters_and_keeps_lines() -> None:
    assert printable("a\tb\nc\r\nd") == "a\tb\nc\nd"
    assert printable("\x1b[31m\x07\x00\x7f\x9b") == "\\x1b[31m\\x07\\x00\\x7f\\x9b"
    assert printable("admin\u202e\u2066txt") == "admin\\u202e\\u2066txt"  # bidi overrides: Trojan Source
    assert describe({"kind": "step", "step": "fetch\x1b[2J"}) == "step: fetch\\x1b[2J"


# --- the commands, with a fake API ------------------------------------------------------------


class FakeAPI:
    """Stands in for serve_app.client.Client; `fail_with` makes every call raise."""

    fail_with: BaseException | None = None
    final: dict[str, Any] = job()

    @classmethod
    def from_settings(cls, settings: object) -> FakeAPI:
        return cls()

    def __enter__(self) -> FakeAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _answer(self, value: Any) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        return value

    def get(self, review_id: str) -> dict[str, Any]:
        return self._answer(self.final)

    def events(self, review_id: str) -> Iterator[dict[str, Any]]:
        yield from self._answer(EVENTS)

    def cancel(self, review_id: str) -> dict[str, Any]:
        return self._answer({**self.final, "status": "cancelled"})

    def submit(self, pr_url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._answer({**self.final, "status": "queued"})

    def cluster(self) -> dict[str, Any]:
        return self._answer({"queue": {s: 0 for s in ("queued", "running", "succeeded", "failed", "cancelled")},
                             "applications": {"reviews[/x]": {"status": "RUNNING", "deployments": {
                                 "ReviewAgent": {"status": "HEALTHY", "replicas": {"RUNNING": 1}}}}},
                             "recent_failures": [{"id": "r-9", "pr_url": f"https://github.com/a/b/pull/1{PATH}",
                                                  "finished_at": None,
                                                  "error": {"code": "[red]x", "message": f"boom {LINK}"}}]})


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    monkeypatch.setenv("PR_REVIEW_HOME", str(tmp_path))
    monkeypatch.delenv("PR_REVIEW_API_KEY", raising=False)
    monkeypatch.setattr(cli, "Client", FakeAPI)
    monkeypatch.setattr(cli_logging, "configure", lambda **_: None)  # process-wide; tested on its own
    # Wide consoles on the runner's streams: one line per message, whatever the terminal.
    for module in (cli, cli_batch):
        monkeypatch.setattr(module, "console", Console(width=400, color_system=None))
        monkeypatch.setattr(module, "err", Console(width=400, color_system=None, stderr=True))
    monkeypatch.setattr(FakeAPI, "fail_with", None)
    monkeypatch.setattr(FakeAPI, "final", job())
    runner = CliRunner()
    yield lambda *args: runner.invoke(cli.app, list(args))


def test_watch_prints_pr_and_model_markup_literally(run: Any) -> None:
    result = run("watch", "r-1")
    assert result.exit_code == 0, result.output
    for literal in (f"reviewed {PATH}, {TITLE}", TITLE, PATH, LINK, "\\x1b[2J", "m[/x]"):
        assert literal in result.stdout, literal
    assert "\x1b" not in result.stdout


def test_a_failed_review_ends_with_its_message_literally(run: Any) -> None:
    FakeAPI.final = job("failed", review=None, error={"code": "llm_error", "message": f"[/bold]{TITLE} {LINK}"})
    result = run("watch", "r-1")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: review failed: [/bold]{TITLE} {LINK}"


def test_status_and_cancel_print_ids_and_names_literally(run: Any) -> None:
    FakeAPI.final = job(id="r-[/b]", repo="acme/[i]shop")
    status = run("status", "r-[/b]")
    assert status.exit_code == 0, status.output
    assert status.stdout.splitlines()[0].startswith("r-[/b]  succeeded  acme/[i]shop#7  step=done")
    cancel = run("cancel", "r-[/b]")
    assert cancel.exit_code == 0 and cancel.stdout.strip() == "r-[/b] cancelled (cancel requested)"


def test_the_cluster_summary_prints_failures_literally(run: Any) -> None:
    result = run("status")
    assert result.exit_code == 0, result.output
    assert "reviews[/x] (running)" in result.stdout
    assert f"https://github.com/a/b/pull/1{PATH}  [red]x: boom {LINK}" in result.stdout


@pytest.mark.parametrize(("status", "expected"), [
    (401, "The API needs a key: set PR_REVIEW_API_KEY (`pr-review keys create NAME` makes one), or run this "
          "where `pr-review serve` keeps its key ({home}/api-key)."),
    (403, "The key may not do this; use a key with more rights (`pr-review keys create NAME` makes one) in "
          "PR_REVIEW_API_KEY."),
])
def test_401_and_403_say_how_to_get_a_key(run: Any, tmp_path: Path, status: int, expected: str) -> None:
    FakeAPI.fail_with = APIError(status, "unauthorized" if status == 401 else "forbidden", "No entry.")
    result = run("watch", "r-1")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("error: No entry. ")
    assert expected.format(home=tmp_path) in line


def test_an_unreachable_api_is_one_line(run: Any) -> None:
    FakeAPI.fail_with = httpx.ConnectError("Connection refused")
    result = run("status", "r-1")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("error: cannot reach the pr-review API at http://127.0.0.1:8000: "
                                     "Connection refused (is `pr-review serve` running? PR_REVIEW_API_URL "
                                     "says where the API is)")


def test_ctrl_c_while_watching_is_one_line(run: Any) -> None:
    FakeAPI.fail_with = KeyboardInterrupt()
    result = run("watch", "r-1")
    assert result.exit_code == 130
    assert result.stderr.strip() == "error: interrupted; what was submitted goes on in the service"
