"""Checkpoints carry what a resume needs and refer to the rest: the PR as fetched is stored once
per head commit, and a run cut short goes on from its checkpoint with that stored PR."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from prreview.db import open_pool
from prreview.demo import install_sample_pr
from prreview.demo.sample_pr import SAMPLE_PR_DEFECTS
from prreview.store import JobStore
from tests.helpers import schema_name
from tests.integration.graph_harness import Events, Harness, harness

__all__ = ["harness"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SAMPLE = ("acme/payments", 42)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    pool = await open_pool(database_url, max_size=4)
    yield JobStore(pool)
    await pool.close()


def checkpoint_bytes(database_url: str, thread_id: str) -> bytes:
    """Everything LangGraph stored for the thread, as raw bytes."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT checkpoint::text::bytea FROM checkpoints WHERE thread_id = %(t)s "
            "UNION ALL SELECT blob FROM checkpoint_blobs WHERE thread_id = %(t)s AND blob IS NOT NULL "
            "UNION ALL SELECT blob FROM checkpoint_writes WHERE thread_id = %(t)s", {"t": thread_id}).fetchall()
    return b"".join(bytes(r[0]) for r in rows)


def pr_requests(harness: Harness) -> list[str]:
    """GETs of the PR itself and of its file list."""
    return [r.path for r in harness.github.requests if r.path.startswith("/repos/acme/payments/pulls/42")
            and r.method == "GET" and not r.path.endswith(("/reviews", "/comments", "/commits"))]


class CrashAt(Events):
    """A worker that dies as the review reaches `step` ("summarize": once the group reviews are
    checkpointed)."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.step = step

    async def emit(self, kind: str, data: dict[str, Any], **kwargs: Any) -> None:
        if kind == "step" and data.get("step") == self.step:
            raise RuntimeError("worker killed")
        await super().emit(kind, data, **kwargs)


async def test_checkpoints_refer_to_the_stored_pr_instead_of_carrying_it(harness: Harness, database_url: str,
                                                                         store: JobStore) -> None:
    install_sample_pr(harness.github)
    async with AsyncPostgresSaver.from_conn_string(database_url) as saver:
        run = await harness.review(*SAMPLE, job_id="refs-1", checkpointer=saver, snapshots=store)
        state = await saver.aget_tuple({"configurable": {"thread_id": "refs-1"}})
    assert state is not None and run.review["verdict"] == "request_changes"
    pr = state.checkpoint["channel_values"]["pr"]
    assert "files" not in pr and "body" not in pr
    snapshot = await store.load_pr_snapshot(*SAMPLE, pr["head_sha"])
    assert snapshot is not None and len(snapshot["files"]) == 5 and snapshot["body"]
    stored = checkpoint_bytes(database_url, "refs-1")
    assert b"@@ -" not in stored  # no patch
    assert b"<pr_file" not in stored  # no diff text rendered for the model (groups, Send payloads)
    assert b"support dashboard can find" not in stored  # no PR description
    assert b"ghp_" not in stored


async def test_a_run_cut_short_resumes_from_its_checkpoint_with_the_stored_pr(harness: Harness, database_url: str,
                                                                           store: JobStore) -> None:
    install_sample_pr(harness.github)
    async with AsyncPostgresSaver.from_conn_string(database_url) as saver:
        with pytest.raises(RuntimeError, match="worker killed"):
            await harness.review(*SAMPLE, job_id="resume-1", checkpointer=saver, snapshots=store,
                                 events=CrashAt("summarize"))
        assert pr_requests(harness) == ["/repos/acme/payments/pulls/42", "/repos/acme/payments/pulls/42/files"]
        harness.github.clear_requests()
        resumed = await harness.review(*SAMPLE, job_id="resume-1", checkpointer=saver, snapshots=store, resume=True)
    assert pr_requests(harness) == []  # the PR came from its snapshot, not from GitHub again
    assert [schema_name(c) for c in resumed.calls] == ["review_summary"]  # the group review is not redone
    found = {(f["path"], f["line"]) for f in resumed.review["findings"]}
    assert {(d.path, d.line) for d in SAMPLE_PR_DEFECTS} <= found


def work_saved(database_url: str, job_id: str) -> int:
    """What a worker's death is judged by (`max_attempts` counts deaths with none of it new)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pr_review_steps_checkpointed(%s)", (job_id,)).fetchone()
    assert row is not None
    return int(row[0])


async def test_work_saved_counts_finished_steps_and_groups_not_the_input(harness: Harness, database_url: str,
                                                                         store: JobStore) -> None:
    install_sample_pr(harness.github)
    job_id = str(uuid.uuid4())
    async with AsyncPostgresSaver.from_conn_string(database_url) as saver:
        with pytest.raises(RuntimeError, match="worker killed"):  # dies in the first step
            await harness.review(*SAMPLE, job_id=job_id, checkpointer=saver, snapshots=store,
                                 events=CrashAt("fetch"))
        assert await saver.aget_tuple({"configurable": {"thread_id": job_id}}) is not None  # the input
        assert work_saved(database_url, job_id) == 0
        with pytest.raises(RuntimeError, match="worker killed"):  # dies after the group reviews
            await harness.review(*SAMPLE, job_id=job_id, checkpointer=saver, snapshots=store, resume=True,
                                 events=CrashAt("summarize"))
        after_groups = work_saved(database_url, job_id)
        assert after_groups >= 3  # fetch, analyze and plan at least
        with pytest.raises(RuntimeError, match="worker killed"):  # dies at the same place again
            await harness.review(*SAMPLE, job_id=job_id, checkpointer=saver, snapshots=store, resume=True,
                                 events=CrashAt("summarize"))
        assert work_saved(database_url, job_id) == after_groups  # nothing new: a death that counts


async def test_a_lost_snapshot_is_fetched_again_while_the_head_has_not_moved(harness: Harness, database_url: str,
                                                                            store: JobStore) -> None:
    install_sample_pr(harness.github)
    async with AsyncPostgresSaver.from_conn_string(database_url) as saver:
        with pytest.raises(RuntimeError, match="worker killed"):
            await harness.review(*SAMPLE, job_id="lost-1", checkpointer=saver, snapshots=store,
                                 events=CrashAt("summarize"))
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert conn.execute("DELETE FROM pr_snapshots").rowcount == 1
        harness.github.clear_requests()
        resumed = await harness.review(*SAMPLE, job_id="lost-1", checkpointer=saver, snapshots=store, resume=True)
    assert pr_requests(harness) == ["/repos/acme/payments/pulls/42", "/repos/acme/payments/pulls/42/files"]
    assert resumed.review["verdict"] == "request_changes"


async def test_a_finished_review_keeps_its_resource_and_no_checkpoint(database_url: str) -> None:
    """The agent's own path (lifecycle + JobRunner, no Ray): once the review has succeeded its
    LangGraph thread is gone, the review resource reads back whole, and what stays is small."""
    from actors.llm_gate import LLMGate
    from actors.resources import AgentResources
    from actors.runner import JobRunner
    from graph.builder import build_review_graph
    from prreview.config import Settings
    from prreview.store import NewJob
    from tests.fakes import FakeGitHub, ScriptedLLM
    from tests.helpers import assert_findings_on_diff

    with FakeGitHub() as github, ScriptedLLM() as llm:
        pr_url = install_sample_pr(github)
        settings = Settings(database_url=database_url, github_api_url=github.url, llm_base_url=llm.base_url,
                            llm_model="scripted")
        resources = await AgentResources.open(settings)
        try:
            db = resources.db
            runner = JobRunner(settings, db.store, db.lifecycle, build_review_graph(resources.checkpointer),
                               resources.github, resources.llm, LLMGate(db.store, "it", None, hold_s=60), "it")
            job = await db.lifecycle.submit(NewJob(pr_url, *SAMPLE, {}), max_queued=10)
            assert job is not None
            assert await runner.run(job.id) == "succeeded"
            stored = await db.store.get_job(job.id)
        finally:
            await resources.close()
        assert stored is not None and stored.head_sha is not None
        resource = stored.resource().model_dump(mode="json")
        assert resource["status"] == "succeeded" and resource["review"]["summary"]
        assert {(d.path, d.line) for d in SAMPLE_PR_DEFECTS} <= {(f["path"], f["line"])
                                                                 for f in resource["review"]["findings"]}
        assert_findings_on_diff(github, resource)
    with psycopg.connect(database_url) as conn:
        left = conn.execute("SELECT (SELECT count(*) FROM checkpoints WHERE thread_id = %(t)s) "
                            "+ (SELECT count(*) FROM checkpoint_blobs WHERE thread_id = %(t)s) "
                            "+ (SELECT count(*) FROM checkpoint_writes WHERE thread_id = %(t)s)",
                            {"t": job.id}).fetchone()
        kept = conn.execute("SELECT (SELECT octet_length(j::text) FROM jobs j WHERE id = %(id)s) "
                            "+ (SELECT sum(octet_length(e::text)) FROM events e WHERE job_id = %(id)s)",
                            {"id": job.id}).fetchone()
        snapshots = conn.execute("SELECT head_sha FROM pr_snapshots").fetchall()
    assert left == (0,)
    assert kept is not None and kept[0] < 20 * 1024  # the job row (with its review) and its events
    assert snapshots == [(stored.head_sha,)]  # the PR once, for the retention sweep to remove
