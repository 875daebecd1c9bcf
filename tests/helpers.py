"""Small helpers shared by the tests: waiting on reviews, building PRs, checking anchors."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from graph.diff import parse_file
from graph.github import PRFile
from prreview.config import Settings
from serve_app.client import Client
from tests.fakes import FakeFile as FakeFile  # re-exported for tests
from tests.fakes import FakeGitHub

TERMINAL = {"succeeded", "failed", "cancelled"}
_numbers = itertools.count(100)


def service_variables() -> set[str]:
    """Every environment variable pr-review's configuration reads (README, "Configuration")."""
    names = set()
    for name, field in Settings.model_fields.items():
        choices = getattr(field.validation_alias, "choices", None)
        names.update(str(c).upper() for c in choices) if choices else names.add(f"PR_REVIEW_{name.upper()}")
    return names


def user_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any pr-review setting (what a new user's shell holds:
    a stack's variables, a GitHub App's among them, must not leak into a child), plus `overrides`."""
    configured = service_variables()
    env = {k: v for k, v in os.environ.items() if k not in configured and not k.startswith("PR_REVIEW_")}
    return {**env, **overrides}


def wait_for(predicate: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.2,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def wait_terminal(api: Client, review_id: str, timeout_s: float = 90.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = api.get(review_id)
        return job if job["status"] in TERMINAL else None

    return wait_for(done, timeout_s, what=f"review {review_id} to finish")


def defect_file(name: str, index: int = 0) -> FakeFile:
    """A Python file whose change holds an `eval` of request data (a critical defect)."""
    base = "import json\n\n\ndef handler(request):\n    return json.loads(request.body)\n"
    head = (f"import json\n\n\ndef handler(request):\n    data = eval(request.body)  # {index}\n"
            "    return data\n")
    return FakeFile(name, base=base, head=head)


def add_pr(github: FakeGitHub, files: int = 1, owner: str = "acme", repo: str = "shop",
           title: str = "Change handlers", body: str = "Refactors request handling.") -> str:
    """A new PR with `files` defective Python files; returns its URL."""
    number = next(_numbers)
    github.add_pr(owner, repo, number, [defect_file(f"svc/handler_{number}_{i}.py", i) for i in range(files)],
                  title=title, body=body)
    return github.pr_url(owner, repo, number)


def assert_findings_on_diff(github: FakeGitHub, job: dict[str, Any]) -> None:
    """Every finding sits on a line the PR's diff shows on its side (GitHub would accept it)."""
    owner, repo = job["repo"].split("/")
    files = httpx.get(f"{github.url}/repos/{owner}/{repo}/pulls/{job['number']}/files",
                      params={"per_page": 100}).json()
    diffs = {f["filename"]: parse_file(PRFile(path=f["filename"], status=f["status"], additions=f["additions"],
                                              deletions=f["deletions"], patch=f.get("patch")))
             for f in files}
    assert job["review"]["findings"], "expected findings"
    for finding in job["review"]["findings"]:
        diff = diffs[finding["path"]]
        assert finding["line"] in diff.commentable(finding["side"]), finding
        if finding.get("end_line"):
            assert finding["end_line"] in diff.commentable(finding["side"]), finding


def agent_replica_pids() -> list[int]:
    from serve_app.local import replica_pids

    return replica_pids("ReviewAgent")


def kill_agent_replicas() -> list[int]:
    import os
    import signal

    pids = agent_replica_pids()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def schema_name(call: Any) -> str:
    return str(((call.request.get("response_format") or {}).get("json_schema") or {}).get("name"))
