"""Repository instructions: `.pr-review.toml` and `AGENTS.md`, read at the PR's base commit.

They are read from the base branch, never from the PR's head: a pull request cannot loosen the
rules of its own review (ignore its own files, silence findings). A broken file never fails a
review: what is wrong is reported in `notes` and the valid rest applies.

    # .pr-review.toml
    focus = "SQL injection and transaction handling"   # what to look at first
    instructions = "We target Python 3.11; prefer asyncpg over psycopg."
    ignore = ["docs/**", "*.snap", "migrations/"]     # paths never reviewed (a trailing / = folder)
    min_severity = "minor"          # drop findings below this severity
    max_nits = 3                    # at most this many nits (a job's own max_nits may lower it)
    request_changes_at = "major"    # the least severe finding that makes the verdict request_changes
    [analyzers]
    disable = ["ruff"]              # analyzers not to run, by name
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graph.github import GitHubClient
from prreview.errors import GitHubError, GitHubRateLimited, GitHubTransient
from prreview.models import SEVERITY_ORDER, Severity
from prreview.urls import PRRef

CONFIG_PATH = ".pr-review.toml"
INSTRUCTION_FILES = ("AGENTS.md",)
MAX_INSTRUCTIONS_CHARS = 3000


class AnalyzerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disable: list[str] = Field(default_factory=list, max_length=50)


class RepoConfig(BaseModel):
    # Enum values as plain strings: the config is checkpointed in the graph's state.
    model_config = ConfigDict(extra="forbid", use_enum_values=True)

    focus: str | None = Field(default=None, max_length=500)
    instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS_CHARS)
    ignore: list[str] = Field(default_factory=list, max_length=200)
    min_severity: Severity = Severity.NIT
    max_nits: int | None = Field(default=None, ge=0, le=50)
    request_changes_at: Severity = Severity.MAJOR
    analyzers: AnalyzerSettings = Field(default_factory=AnalyzerSettings)
    # Where the settings came from, and what was wrong with them (reported in the summary).
    sources: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def ignored_by(self, path: str) -> str | None:
        """The `ignore` pattern that matches `path`, if any."""
        return next((pattern for pattern in self.ignore if glob_match(path, pattern)), None)

    def keeps(self, severity: str) -> bool:
        return SEVERITY_ORDER.get(severity, 99) <= SEVERITY_ORDER[self.min_severity]

    def enabled(self, names: Iterable[str]) -> list[str]:
        return [name for name in names if name not in self.analyzers.disable]


def glob_match(path: str, pattern: str) -> bool:
    """Shell-style match where `*` also crosses folders; `dir/` matches everything under dir."""
    pattern = pattern.strip().lstrip("/")
    if not pattern:
        return False
    if pattern.endswith("/"):
        return path.startswith(pattern)
    if fnmatch.fnmatchcase(path, pattern):
        return True
    # a bare name pattern ("*.snap", "Makefile") matches at any depth, as in .gitignore
    return "/" not in pattern and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


def parse_config(text: str, source: str = CONFIG_PATH) -> RepoConfig:
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return RepoConfig(sources=[source], notes=[f"{source} is not valid TOML ({exc}); it was ignored"])
    data.pop("sources", None)
    data.pop("notes", None)
    notes: list[str] = []
    for _ in range(len(data) + 1):
        try:
            return RepoConfig(**data, sources=[source], notes=notes)
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            for key in sorted(bad):
                notes.append(f"{source}: `{key}` was ignored ({_first_error(exc, key)})")
                data.pop(key, None)
            if not bad:
                break
    return RepoConfig(sources=[source], notes=notes or [f"{source} could not be read; it was ignored"])


def _first_error(exc: ValidationError, key: str) -> str:
    return next((str(e["msg"]) for e in exc.errors() if e["loc"] and str(e["loc"][0]) == key), "invalid")


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


async def _read(github: GitHubClient, ref: PRRef, path: str, at: str, notes: list[str]) -> str | None:
    try:
        return _text(await github.file_content(ref, path, at))
    except (GitHubTransient, GitHubRateLimited):
        raise  # worth a retry of the step
    except GitHubError as exc:  # unreadable (permissions, a broken file): review with the defaults
        notes.append(f"{path} could not be read ({exc.message}); it was ignored")
        return None


async def load_repo_config(github: GitHubClient, ref: PRRef, at: str) -> RepoConfig:
    """The repository's review settings at commit `at` (the PR's base), defaults when it has none."""
    notes: list[str] = []
    text = await _read(github, ref, CONFIG_PATH, at, notes)
    config = parse_config(text) if text is not None else RepoConfig()
    config.notes.extend(notes)
    for name in INSTRUCTION_FILES:
        instructions = await _read(github, ref, name, at, config.notes)
        if instructions and instructions.strip():
            extra = instructions.strip()[:MAX_INSTRUCTIONS_CHARS]
            combined = "\n\n".join(part for part in (config.instructions, extra) if part)
            config = config.model_copy(update={"instructions": combined, "sources": [*config.sources, name]})
            break
    return config
