"""Static analyzers: real ruff on head contents, the secret scanner, and the registry's guarantees."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from graph.analyzers import (
    AnalyzerResult,
    RuffAnalyzer,
    SecretScanner,
    SourceFile,
    _ruff,
    default_analyzers,
    run_analyzers,
)
from graph.analyzers._secrets import _ASSIGNMENT, MAX_LINE_CHARS, RULES, scan_files, scan_line
from graph.offload import shared_pool
from tests.unit.test_offload import backtrack, ticking

CODE = '''\
import os
import sys


def handler(request):
    data = eval(request.body)
    label = f"total"
    try:
        return os.path.join(data, label)
    except:
        return None
'''


def _source(path: str, content: str, changed: Sequence[int]) -> SourceFile:
    lines = content.splitlines()
    return SourceFile(path, content, {n: lines[n - 1] for n in changed})


async def test_ruff_results_are_kept_on_changed_lines_only(tmp_path: Path) -> None:
    file = _source("app/views.py", CODE, changed=[6, 7])
    findings, [report] = await run_analyzers({"ruff": RuffAnalyzer()}, [file])
    assert report["status"] == "ok" and report["files"] == 1
    assert report["results"] > report["kept"] == len(findings) == 2  # sys unused, bare except: not changed
    by_line = {f["line"]: f for f in findings}
    assert by_line[6]["title"].endswith("(S307)") and by_line[6]["severity"] == "major"
    assert by_line[6]["category"] == "security" and by_line[6]["source"] == "ruff"
    assert "https://docs.astral.sh/ruff/rules/" in by_line[6]["body"]
    # ruff's safe one-line fix becomes a suggestion for that line
    assert by_line[7]["title"].endswith("(F541)") and by_line[7]["suggestion"] == '    label = "total"'


async def test_ruff_ignores_the_repository_config_and_unsafe_paths(tmp_path: Path) -> None:
    evil = _source("../../outside.py", "import os\n", changed=[1])
    files = [evil, _source("pyproject.toml", "[tool.ruff]\nselect = []\n", changed=[1]),
             _source("pkg/a.py", "import os\n", changed=[1])]
    results = await RuffAnalyzer().run(files, tmp_path / "work")
    assert [(r.path, r.rule) for r in results] == [("pkg/a.py", "F401")]
    assert not (tmp_path / "outside.py").exists()


async def test_a_missing_ruff_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ruff, "find_ruff", lambda: None)
    findings, reports = await run_analyzers(default_analyzers(), [_source("a.py", CODE, changed=[6])])
    assert findings == []
    assert {r["name"]: r["status"] for r in reports} == {"ruff": "unavailable", "secrets": "ok"}
    assert "ruff is not installed" in reports[0]["detail"]


SECRETS = {
    "aws": 'AWS_KEY = "AKIAIOSFODNN7EXAMPLF"',
    "github": 'token = "ghp_' + "x1Y2z3" * 6 + '"',
    "private key": "-----BEGIN RSA PRIVATE KEY-----",
    "generic": 'PAYMENTS_API_KEY = "pk-live-7f3a9c2e41b8d06f5a1e93c4"',
    "json": '"password": "Zx9!k2Lq0pWm"',
}


@pytest.mark.parametrize("line", list(SECRETS.values()), ids=list(SECRETS))
def test_the_secret_scanner_finds_credentials_and_never_repeats_them(line: str) -> None:
    [result] = scan_line("conf.py", 3, line)
    assert result.severity == "critical" and result.category == "security"
    secret = line.split('"')[-2] if '"' in line else "RSA PRIVATE KEY"
    if len(secret) > 8 and '"' in line:
        assert secret not in result.body and secret not in result.title
        assert f"{secret[:4]}…({len(secret)} characters)" in result.body


@pytest.mark.parametrize("line", [
    'api_key = os.environ["API_KEY"]', 'password = "changeme123"', 'SECRET_NAME = "payments-prod-db"',
    'token = "your-token-here-1"', 'TOKEN_ENV = "AB12CD34EF"', 'api_key = "${API_KEY_2024}"',
    'password = "aaaaaaaaaaaaa1"',
])
def test_the_secret_scanner_leaves_references_and_placeholders_alone(line: str) -> None:
    assert scan_line("conf.py", 1, line) == []


def test_the_secret_scanner_reads_any_line_in_linear_time() -> None:
    """A PR line of 20,000 characters (`BANNER = "tokentoken…"`) took the old backtracking pattern
    minutes; RE2 reads it in one pass, and only its first MAX_LINE_CHARS characters."""
    linear = type(_ASSIGNMENT)
    assert linear.__module__.startswith("re2") and all(isinstance(r.pattern, linear) for r in RULES)
    banner = 'BANNER = "' + "token" * 4000 + '"'
    assert scan_line("banner.py", 1, banner) == []
    assert scan_line("banner.py", 1, "api_token = 'Zx9k2Lq0pWm7' " + "token" * 4000)[0].rule == "generic-secret"
    hidden_late = "x" * MAX_LINE_CHARS + ' api_token = "Zx9k2Lq0pWm7"'
    assert scan_line("a.py", 1, hidden_late) == []  # past the part of a line that is read
    assert [r.line for r in scan_files([("a.py", {1: banner, 2: 'password = "Zx9!k2Lq0pWm"'})])] == [2]


class Exploding:
    name = "exploding"
    needs_content = False

    def wants(self, path: str) -> bool:
        return True

    async def run(self, files: Sequence[SourceFile], workdir: Path) -> list[AnalyzerResult]:
        raise RuntimeError("tool crashed")


class Slow(Exploding):
    async def run(self, files: Sequence[SourceFile], workdir: Path) -> list[AnalyzerResult]:
        await asyncio.sleep(10)
        return []


class Spanning(Exploding):
    """Reports one result spanning lines 1-3 and one on an unchanged line."""

    async def run(self, files: Sequence[SourceFile], workdir: Path) -> list[AnalyzerResult]:
        return [AnalyzerResult(files[0].path, 1, "minor", "R1", "spans", "body", end_line=3, suggestion="x"),
                AnalyzerResult(files[0].path, 9, "minor", "R2", "elsewhere", "body")]


async def test_more_analyzers_plug_in_and_a_broken_one_sinks_nothing() -> None:
    file = _source("a.py", "one\ntwo\nkey = 'AKIAIOSFODNN7EXAMPLF'\n", changed=[3])
    registry = {"secrets": SecretScanner(), "exploding": Exploding(), "spanning": Spanning()}
    findings, reports = await run_analyzers(registry, [file])
    statuses = {r["name"]: r["status"] for r in reports}
    assert statuses == {"secrets": "ok", "exploding": "failed", "spanning": "ok"}
    assert "RuntimeError: tool crashed" in reports[1]["detail"]
    spans = next(f for f in findings if f["source"] == "spanning")
    assert spans["line"] == 3 and spans["suggestion"] is None  # moved onto the changed line it spans
    assert [f["source"] for f in findings] == ["secrets", "spanning"]


class Backtracking(Exploding):
    """Computes in a worker process for far longer than its bound."""

    async def run(self, files: Sequence[SourceFile], workdir: Path) -> list[AnalyzerResult]:
        await shared_pool().run(backtrack, "token" * 4000, timeout_s=0.5)
        return []


async def test_an_analyzer_past_its_cpu_bound_is_killed_and_reported_while_the_loop_runs() -> None:
    file = _source("a.py", "one\nkey = 'AKIAIOSFODNN7EXAMPLF'\n", changed=[2])
    (findings, reports), ticks = await ticking(run_analyzers({"slow": Backtracking(), "secrets": SecretScanner()},
                                                             [file]))
    statuses = {r["name"]: (r["status"], r["detail"]) for r in reports}
    assert statuses["slow"] == ("timeout", "backtrack did not finish within 0.5 s")
    assert statuses["secrets"][0] == "ok" and [f["rule"] for f in findings] == ["aws-access-key-id"]
    assert ticks >= 5


async def test_a_slow_analyzer_is_cut_off() -> None:
    _, [report] = await run_analyzers({"slow": Slow()}, [_source("a.py", "x\n", [1])], timeout_s=0.2)
    assert report["status"] == "timeout"


async def test_an_analyzer_without_files_says_so() -> None:
    _, [report] = await run_analyzers({"ruff": RuffAnalyzer()}, [_source("README.md", "x\n", [1])])
    assert report["status"] == "no_files"
