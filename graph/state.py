"""The review graph's state: what is checkpointed after every step (never a token or a client)."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict


class ReviewState(TypedDict, total=False):
    job_id: str
    repo: str
    number: int
    options: dict[str, Any]
    pr: dict[str, Any]                 # metadata, files and patches as fetched (no credentials)
    config: dict[str, Any]             # the repository's instructions (graph.repo_config.RepoConfig)
    prior: dict[str, Any] | None       # the last review pr-review published on the PR, if any
    incremental: dict[str, Any] | None  # {"since": sha, ...} when only later pushes are reviewed
    review_files: list[dict[str, Any]] | None  # the changes since the last reviewed head, which the
                                               # model reviews instead of the PR's files (None)
    scopes: dict[str, list[dict[str, Any]]]  # path -> enclosing-definition lines above its hunks
    analysis: list[dict[str, Any]]     # analyzer findings on changed lines
    analyzers: list[dict[str, Any]]    # one report per analyzer
    prompt: dict[str, str]             # prompt parts every group shares (guidance, other changes)
    groups: list[dict[str, Any]]       # {"index", "paths", "chunks", "tokens", "completes"}
    skipped: list[dict[str, str]]      # {"path", "reason"}
    group_findings: Annotated[list[dict[str, Any]], operator.add]
    group_skipped: Annotated[list[dict[str, str]], operator.add]  # parts the model could not review
    files_reviewed: list[str]
    findings: list[dict[str, Any]]     # anchored, deduplicated, ranked
    repeated: list[dict[str, Any]]     # found again but already posted on the PR: not repeated
    review: dict[str, Any]


class GroupTask(TypedDict):
    """What one parallel review task receives through Send."""

    group: dict[str, Any]
    pr: dict[str, Any]
    repo: str
    number: int
    options: dict[str, Any]
    prompt: dict[str, str]
