"""Pydantic models of the public HTTP API (README, "HTTP API"): what crosses the HTTP edge."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Status(StrEnum):
    """A review job's status (the `jobs.status` CHECK constraint lists the same values)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


TERMINAL_STATUSES: frozenset[str] = frozenset(s.value for s in Status if s.terminal)


class Severity(StrEnum):
    """A finding's severity, most severe first (the order ranks findings)."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    NIT = "nit"


SEVERITY_ORDER: dict[str, int] = {s.value: rank for rank, s in enumerate(Severity)}


class Verdict(StrEnum):
    APPROVE = "approve"
    COMMENT = "comment"
    REQUEST_CHANGES = "request_changes"


class ReviewOptions(BaseModel):
    """Per-review options. Part of the idempotency key, so unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    post: bool = Field(default=False, description="publish the review to the PR on GitHub")
    max_findings: int = Field(default=30, ge=1, le=200)
    max_nits: int = Field(default=5, ge=0, le=50)
    focus: str | None = Field(default=None, max_length=500, description="extra reviewer focus")


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pr_url: str = Field(max_length=2000)
    options: ReviewOptions = Field(default_factory=ReviewOptions)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pr_urls: list[str] = Field(min_length=1, max_length=1000)
    options: ReviewOptions = Field(default_factory=ReviewOptions)


class Finding(BaseModel):
    path: str
    line: int = Field(ge=1)
    end_line: int | None = None
    side: Literal["RIGHT", "LEFT"] = "RIGHT"
    severity: Severity
    category: str
    title: str
    body: str
    suggestion: str | None = None
    source: str | None = Field(default=None, description="who found it: 'model' or an analyzer name")


class SkippedFile(BaseModel):
    path: str
    reason: str


class Review(BaseModel):
    summary: str
    verdict: Verdict
    findings: list[Finding]
    files_reviewed: list[str]
    files_skipped: list[SkippedFile]
    model: str
    # Additions to the public contract (it may be extended, never broken): what the analyzers ran and found, the
    # incremental scope after a new push, the repository's .pr-review.toml, and the GitHub post.
    analyzers: list[dict[str, Any]] = Field(default_factory=list)
    incremental: dict[str, Any] | None = None
    repo_config: dict[str, Any] | None = None
    publication: dict[str, Any] | None = None


class Progress(BaseModel):
    step: str = "queued"
    files_total: int = 0
    files_done: int = 0


class Usage(BaseModel):
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ErrorBody(BaseModel):
    code: str
    message: str


class ReviewResource(BaseModel):
    model_config = ConfigDict(use_enum_values=True)

    id: str
    pr_url: str
    repo: str
    number: int
    head_sha: str | None
    status: Status
    attempts: int
    created_at: datetime
    updated_at: datetime
    progress: Progress
    usage: Usage
    review: Review | None = None
    error: ErrorBody | None = None
    options: dict[str, Any] = Field(default_factory=dict)
