"""What an analyzer is, and how the review runs them: each bounded in time, failures reported.

An analyzer reads the PR's changed files at the head commit and reports results; only results
that fall on changed lines are kept, since the review is about the change (and GitHub only takes
comments on the diff). Results become findings whose `source` names the analyzer.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 120.0
MAX_KEPT = 300  # results on changed lines kept per analyzer: a generated file must not flood the review


@dataclass(frozen=True)
class SourceFile:
    path: str
    content: str | None  # the whole file at the head commit; None when not fetched or not text
    added: Mapping[int, str]  # the changed lines: line number at head -> text


@dataclass(frozen=True)
class AnalyzerResult:
    path: str
    line: int
    severity: str  # critical | major | minor | nit
    rule: str
    title: str
    body: str
    category: str = "static-analysis"
    end_line: int | None = None
    suggestion: str | None = None


@dataclass
class AnalyzerReport:
    """What one analyzer did, carried in the review (`review["analyzers"]`)."""

    name: str
    status: str  # "ok", "unavailable" (tool not installed), "failed", "timeout", "no_files"
    files: int = 0
    results: int = 0  # everything it reported
    kept: int = 0  # results on changed lines
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AnalyzerUnavailable(Exception):
    """The analyzer's tool is not installed here."""


class Analyzer(Protocol):
    name: str
    needs_content: bool  # whether it reads whole files (fetched from GitHub) or only changed lines

    def wants(self, path: str) -> bool:
        """Whether it analyzes this file."""
        ...

    async def run(self, files: Sequence[SourceFile], workdir: Path) -> list[AnalyzerResult]: ...


def on_changed_lines(result: AnalyzerResult, file: SourceFile) -> AnalyzerResult | None:
    """The result if it touches a changed line (moved to the first one it spans), else None."""
    last = result.end_line if result.end_line and result.end_line >= result.line else result.line
    changed = [n for n in range(result.line, last + 1) if n in file.added]
    if not changed:
        return None
    if changed[0] == result.line:
        return result
    return AnalyzerResult(result.path, changed[0], result.severity, result.rule, result.title, result.body,
                          result.category, None, None)


def as_finding(result: AnalyzerResult, source: str) -> dict[str, Any]:
    finding: dict[str, Any] = {
        "path": result.path, "line": result.line, "end_line": result.end_line, "side": "RIGHT",
        "severity": result.severity, "category": result.category, "title": result.title,
        "body": result.body, "suggestion": result.suggestion, "source": source, "rule": result.rule}
    return finding


Findings = list[dict[str, Any]]


async def _run_one(name: str, analyzer: Analyzer, files: Sequence[SourceFile], workdir: Path,
                   timeout_s: float) -> tuple[Findings, AnalyzerReport]:
    mine = [f for f in files
            if analyzer.wants(f.path) and (f.content is not None or not analyzer.needs_content)]
    report = AnalyzerReport(name, "ok", files=len(mine))
    if not mine:
        report.status = "no_files"
        return [], report
    try:
        results = await asyncio.wait_for(analyzer.run(mine, workdir / name), timeout_s)
    except AnalyzerUnavailable as exc:
        report.status, report.detail = "unavailable", str(exc)
        return [], report
    except TimeoutError as exc:  # its own bound (a worker process killed), or the run's
        report.status, report.detail = "timeout", str(exc) or f"no answer within {timeout_s:.0f} s"
        return [], report
    except Exception as exc:  # one broken analyzer must not sink the review; the report says why
        log.exception("analyzer %s failed", name)
        report.status, report.detail = "failed", f"{type(exc).__name__}: {exc}"[:300]
        return [], report
    by_path = {f.path: f for f in mine}
    kept = []
    for result in results:
        file = by_path.get(result.path)
        moved = on_changed_lines(result, file) if file else None
        if moved is not None:
            kept.append(as_finding(moved, name))
    if len(kept) > MAX_KEPT:
        report.detail = f"{len(kept) - MAX_KEPT} more results on changed lines not kept (at most {MAX_KEPT})"
        kept = kept[:MAX_KEPT]
    report.results, report.kept = len(results), len(kept)
    return kept, report


async def run_analyzers(analyzers: Mapping[str, Analyzer], files: Sequence[SourceFile], *,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[Findings, list[dict[str, Any]]]:
    """Run every analyzer on `files` at once; returns (findings on changed lines, one report each)."""
    with tempfile.TemporaryDirectory(prefix="pr-review-analysis-") as tmp:
        outcomes = await asyncio.gather(*(_run_one(name, analyzer, files, Path(tmp), timeout_s)
                                          for name, analyzer in analyzers.items()))
    findings = [f for kept, _ in outcomes for f in kept]
    return findings, [report.to_dict() for _, report in outcomes]


def safe_relative(path: str) -> Path | None:
    """`path` as a relative path that stays inside a directory, or None (absolute, `..`)."""
    candidate = Path(path)
    if candidate.is_absolute() or ".." in candidate.parts or not candidate.parts:
        return None
    return candidate
