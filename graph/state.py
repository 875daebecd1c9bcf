"""The review graph's state: what is checkpointed after every step (never a token or a client).

Checkpoints carry what a resume needs and refer to the rest: the PR as fetched (patches, body,
commit messages) is stored once per head commit (`ReviewContext.snapshots`) and the state keeps its
head commit and a little metadata; the groups keep which parts of which files they review, not the
diff text, which each group task renders again from the snapshot in a worker process.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired, TypedDict


class ReviewState(TypedDict, total=False):
    job_id: str
    repo: str
    number: int
    options: dict[str, Any]
    # The PR's metadata (head_sha, base_sha, base_ref, title, author, html_url); its
    # files, body and commit messages are in the snapshot of (repo, number, head_sha). A state
    # checkpointed by an earlier version holds them here (`files` present): still read as is.
    pr: dict[str, Any]
    config: dict[str, Any]             # the repository's instructions (graph.repo_config.RepoConfig)
    prior: dict[str, Any] | None       # the last review pr-review published on the PR, if any
    # {"since": sha, ...} when only later pushes are reviewed: the files changed since then are the
    # snapshot of (repo, number, "since..head").
    incremental: dict[str, Any] | None
    review_files: list[dict[str, Any]] | None  # earlier versions only: those files, inline
    scopes: dict[str, list[dict[str, Any]]]  # path -> enclosing-definition lines above its hunks
    analysis: list[dict[str, Any]]     # analyzer findings on changed lines
    analyzers: list[dict[str, Any]]    # one report per analyzer
    prompt: dict[str, str]             # prompt parts every group shares (guidance, other changes)
    # {"index", "paths", "tokens", "completes", "budget", "chunks": [{"path", "part", "tokens",
    # "last"}]}: part n of a file is its n-th chunk as graph.plan.chunk_file cuts it within `budget`
    groups: list[dict[str, Any]]
    skipped: list[dict[str, str]]      # {"path", "reason"}
    group_findings: Annotated[list[dict[str, Any]], operator.add]
    group_skipped: Annotated[list[dict[str, str]], operator.add]  # parts the model could not review
    files_reviewed: list[str]
    findings: list[dict[str, Any]]     # anchored, deduplicated, ranked
    repeated: list[dict[str, Any]]     # found again but already posted on the PR: not repeated
    review: dict[str, Any]


class GroupTask(TypedDict):
    """What one parallel review task receives through Send: references and the little it needs
    beside the snapshot (the scope lines and analyzer results of its files)."""

    group: dict[str, Any]
    repo: str
    number: int
    options: dict[str, Any]
    prompt: dict[str, str]
    head_sha: NotRequired[str]                       # the PR snapshot (title, body, commit messages)
    since: NotRequired[str | None]                   # incremental: it reviews the files changed since
    scopes: NotRequired[dict[str, list[dict[str, Any]]]]
    evidence: NotRequired[dict[str, list[dict[str, Any]]]]
    # The PR's title, body and commit messages: filled in by the task itself (and carried in the
    # payload by earlier versions).
    pr: NotRequired[dict[str, Any]]
