"""`pr-review batch` and `pr-review status` against a real local stack (Ray Serve, Postgres, fakes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from serve_app.batch import parse_lines
from serve_app.cli import app
from tests.helpers import add_pr

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def run_cli(stack: Any, *args: str, stdin: str | None = None) -> Result:
    env = {"PR_REVIEW_API_URL": stack.api_url, "COLUMNS": "200"}
    return CliRunner().invoke(app, list(args), env=env, input=stdin)


def read_summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def test_parse_lines_skips_comments_blanks_and_repeats() -> None:
    parsed = parse_lines(["# header", "", "  https://h/a/b/pull/1  ", "https://h/a/b/pull/1/",
                          "https://h/a/b/pull/2 # why", "https://h/a/b/pull/3#discussion_r1", "two words",
                          "\t# indented comment"])
    assert [(e.line, e.text) for e in parsed.entries] == [
        (3, "https://h/a/b/pull/1"), (5, "https://h/a/b/pull/2"), (6, "https://h/a/b/pull/3#discussion_r1"),
        (7, "two words")]
    assert parsed.duplicates == 1
    assert [e.status for e in parsed.entries] == ["queued", "queued", "queued", "invalid"]


def test_batch_of_ten_writes_results_and_a_summary_then_resumes_without_llm_calls(stack, tmp_path) -> None:
    urls = [add_pr(stack.github) for _ in range(10)]
    batch_file = tmp_path / "release-1.2.txt"
    batch_file.write_text("\n".join([
        "# release 1.2: every PR merged since 1.1", "",
        *urls[:5],
        urls[2] + "   # listed twice on purpose",
        "not a url",
        "https://evil.example/acme/shop/pull/1",
        "", *urls[5:], "",
    ]))
    out = tmp_path / "out"

    first = run_cli(stack, "batch", str(batch_file), "--out", str(out), "--poll-s", "0.3")

    assert first.exit_code == 0, first.output
    assert "progress: " in first.output and "progress: 10/10 done" in first.output, first.output
    assert "reviews/min" in first.output
    assert "line 9: not a url" in first.output and "foreign_host" in first.output
    summary = read_summary(out)
    totals = summary["totals"]
    assert totals["counts"] == {"succeeded": 10, "invalid": 2}
    assert totals["prs"] == 12 and totals["duplicates_skipped"] == 1 and totals["reused"] == 0
    assert summary["exit_status"] == 0
    rows = {row["pr_url"]: row for row in summary["reviews"] if row["status"] == "succeeded"}
    assert sorted(rows) == sorted(urls)
    invalid = [row for row in summary["reviews"] if row["status"] == "invalid"]
    assert [(r["line"], r["error"]["code"]) for r in invalid] == [(9, "invalid_pr_url"), (10, "foreign_host")]

    # one Markdown and one JSON file per PR, named owner__repo__number, holding the API's review
    for url in urls:
        number = int(url.rsplit("/", 1)[1])
        job = json.loads((out / f"acme__shop__{number}.json").read_text())
        latest = stack.api.get(rows[url]["id"])
        assert {**job, "updated_at": None} == {**latest, "updated_at": None}  # its last event may come later
        assert job["status"] == "succeeded" and job["review"]["verdict"] == "request_changes"
        markdown = (out / f"acme__shop__{number}.md").read_text()
        assert f"# Review of acme/shop#{number}" in markdown and "eval" in markdown
        row = rows[url]
        assert row["verdict"] == "request_changes"
        critical = sum(f["severity"] == "critical" for f in job["review"]["findings"])
        assert row["findings"]["critical"] == critical >= 1
        assert row["tokens"]["total"] == job["usage"]["prompt_tokens"] + job["usage"]["completion_tokens"] > 0
        assert row["files"] == {"markdown": f"acme__shop__{number}.md", "json": f"acme__shop__{number}.json"}
    assert len(list(out.glob("acme__shop__*"))) == 20
    assert totals["llm_calls"] == len(stack.llm.requests) > 0
    assert totals["tokens"]["total"] == sum(r["tokens"]["total"] for r in rows.values())
    summary_md = (out / "summary.md").read_text()
    assert summary_md.count("| succeeded |") == 10 and summary_md.count("| invalid |") == 2
    assert "acme/shop#" in first.output and "request_changes" in first.output  # the terminal table

    # the same command again: every review is reused, the model is not called at all
    stack.llm.reset()
    again = run_cli(stack, "batch", str(batch_file), "--out", str(out), "--poll-s", "0.3")
    assert again.exit_code == 0, again.output
    assert stack.llm.started == 0
    resumed = read_summary(out)
    assert resumed["totals"]["reused"] == 10
    assert resumed["totals"]["counts"] == {"succeeded": 10, "invalid": 2}
    assert {r["id"] for r in resumed["reviews"]} == {r["id"] for r in summary["reviews"]}


def test_batch_exits_non_zero_when_a_review_fails_and_status_shows_the_cluster(stack, tmp_path) -> None:
    good = add_pr(stack.github)
    missing = stack.github.pr_url("acme", "shop", 99_999)  # no such PR: the review fails at fetch
    out = tmp_path / "from-stdin"

    result = run_cli(stack, "batch", "-", "--out", str(out), "--poll-s", "0.3", stdin=f"{good}\n{missing}\n")

    assert result.exit_code == 1, result.output
    assert "1 of 2 review(s) did not succeed" in result.output
    rows = {row["pr_url"]: row for row in read_summary(out)["reviews"]}
    assert rows[good]["status"] == "succeeded"
    assert rows[missing]["status"] == "failed" and rows[missing]["error"]["code"] == "pr_not_found"
    assert read_summary(out)["exit_status"] == 1
    assert (out / "acme__shop__99999.md").read_text().count("failed") >= 1

    status = run_cli(stack, "status")
    assert status.exit_code == 0, status.output
    assert "queue: queued=" in status.output and "failed=" in status.output
    for deployment in ("ReviewIngress", "JobDispatcher", "ReviewAgent"):
        assert deployment in status.output
    assert "1 running" in status.output
    assert "recent failures:" in status.output
    assert missing in status.output and "pr_not_found" in status.output


def test_batch_with_nothing_to_review_fails_with_a_reason(stack, tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    result = run_cli(stack, "batch", str(empty), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "no PR URL in the input" in result.output
    missing = run_cli(stack, "batch", str(tmp_path / "nope.txt"))
    assert missing.exit_code == 2 and "cannot read" in missing.output
