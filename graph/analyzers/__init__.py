"""Static analyzers the review runs on the changed files, as evidence for the model.

A registry maps names to analyzers; `default_analyzers()` returns ruff and the secret scanner.
To add one, implement the `Analyzer` protocol and pass it in `ReviewContext.analyzers`, for
example `{**default_analyzers(), "mypy": MyPyAnalyzer()}`. A repository's `.pr-review.toml` may
turn analyzers off by name.
"""

from __future__ import annotations

from graph.analyzers._base import (
    Analyzer,
    AnalyzerReport,
    AnalyzerResult,
    AnalyzerUnavailable,
    SourceFile,
    run_analyzers,
)
from graph.analyzers._ruff import RuffAnalyzer
from graph.analyzers._secrets import SecretScanner

__all__ = ["Analyzer", "AnalyzerReport", "AnalyzerResult", "AnalyzerUnavailable", "RuffAnalyzer",
           "SecretScanner", "SourceFile", "default_analyzers", "run_analyzers"]


def default_analyzers() -> dict[str, Analyzer]:
    return {"ruff": RuffAnalyzer(), "secrets": SecretScanner()}
