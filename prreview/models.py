"""Pydantic models of the public contract (API.md): what crosses the HTTP edge."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE_STATUSES: frozenset[str] = frozenset({"queued", "running"})
Severity = Literal["critical", "major", "minor", "nit"]
Verdict = Literal["approve", "comment", "request_changes"]
SEVERITY_ORDER: dict[str, int] = {"critical": 0, "major": 1, "minor": 2, "nit": 3}


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
    # Extensions of the contract (API.md allows adding): what the analyzers ran and found, the
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
    id: str
    pr_url: str
    repo: str
    number: int
    head_sha: str | None
    status: JobStatus
    attempts: int
    created_at: datetime
    updated_at: datetime
    progress: Progress
    usage: Usage
    review: Review | None = None
    error: ErrorBody | None = None
    options: dict[str, Any] = Field(default_factory=dict)
