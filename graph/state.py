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
    groups: list[dict[str, Any]]       # {"index", "paths", "text", "tokens"}
    skipped: list[dict[str, str]]      # {"path", "reason"}
    group_findings: Annotated[list[dict[str, Any]], operator.add]
    findings: list[dict[str, Any]]     # anchored, deduplicated, ranked
    review: dict[str, Any]


class GroupTask(TypedDict):
    """What one parallel review task receives through Send."""

    group: dict[str, Any]
    pr: dict[str, Any]
    repo: str
    number: int
    options: dict[str, Any]
