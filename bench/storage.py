"""Bytes a review writes to its checkpoints, and bytes it leaves behind once finished.

Each PR (the demo's 5-file sample, a 24-file and a 300-file synthetic PR) is reviewed by the real
agent code path in this process: a job submitted through the lifecycle and run by `JobRunner`
with LangGraph's `AsyncPostgresSaver` (`durability="sync"`) on a fresh PostgreSQL database, against
the fake GitHub and the scripted LLM. The database counts every row written into the checkpoint
tables and the PR snapshots (bench/_checkpoint_bytes.py). Once the job has finished (the runner
deletes its LangGraph thread), what is kept is measured: the job row, its events, any checkpoint
row left, and the PR's snapshot (kept until the retention sweep, an hour after the last active
job of that PR).

The same measurement runs twice in one session: on the code of a baseline commit, checked out in a
temporary `git worktree` (default 9bcdbfd, before PR snapshots), and on this working tree.

    python -m bench.storage [--baseline 9bcdbfd]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOAL_KEPT_BYTES = 20 * 1024


# --- one variant, in a subprocess whose working directory is the code under test -----------------------
async def _measure() -> list[dict[str, Any]]:
    import psycopg

    from actors.llm_gate import LLMGate
    from actors.resources import AgentResources
    from actors.runner import JobRunner
    from bench._checkpoint_bytes import counting_database, install_prs, written
    from graph.builder import build_review_graph
    from prreview.config import load_settings
    from prreview.store import NewJob
    from tests.fakes import FakeGitHub, ScriptedLLM

    results = []
    with FakeGitHub() as github, ScriptedLLM() as llm, counting_database() as url:
        cases = install_prs(github)
        os.environ.update({"DATABASE_URL": url, "GITHUB_API_URL": github.url, "LLM_BASE_URL": llm.base_url,
                           "LLM_MODEL": "scripted"})
        settings = load_settings()
        resources = await AgentResources.open(settings)
        try:
            db, owner = resources.db, "bench-storage"
            gate = LLMGate(db.store, owner, None, hold_s=60)  # no global cap: one review at a time
            runner = JobRunner(settings, db.store, db.lifecycle, build_review_graph(resources.checkpointer),
                               resources.github, resources.llm, gate, owner)
            for case in cases:
                owner_name, repo = case.repo.split("/")
                job = await db.lifecycle.submit(NewJob(github.pr_url(owner_name, repo, case.number), case.repo,
                                                       case.number, {}), max_queued=100)
                assert job is not None
                status = await asyncio.wait_for(runner.run(job.id), 300)
                assert status == "succeeded", status
                wrote = written(url, job.id, case.key)
                with psycopg.connect(url) as conn:
                    kept = conn.execute("""
                        SELECT (SELECT octet_length(j::text) FROM jobs j WHERE id = %(id)s),
                               (SELECT coalesce(sum(octet_length(e::text)), 0) FROM events e WHERE job_id = %(id)s),
                               (SELECT coalesce(sum(octet_length(checkpoint::text)), 0) FROM checkpoints
                                 WHERE thread_id = %(t)s)
                               + (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs
                                  WHERE thread_id = %(t)s)
                               + (SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes
                                  WHERE thread_id = %(t)s),
                               (SELECT coalesce(sum(octet_length(data::text)), 0) FROM pr_snapshots
                                 WHERE repo = %(repo)s AND number = %(n)s),
                               (SELECT coalesce(sum(pg_column_size(data)), 0) FROM pr_snapshots
                                 WHERE repo = %(repo)s AND number = %(n)s),
                               (SELECT octet_length(review::text) FROM jobs WHERE id = %(id)s)
                        """, {"id": job.id, "t": job.id, "repo": case.repo, "n": case.number}).fetchone()
                assert kept is not None
                job_row, events, checkpoints, snapshot, snapshot_disk, review = (int(v or 0) for v in kept)
                results.append({"pr": case.name, "checkpoints": wrote.checkpoints,
                                "written_checkpoints": wrote.checkpoint_bytes, "written_snapshot": wrote.snapshot_bytes,
                                "kept_job": job_row, "kept_review": review, "kept_events": events,
                                "kept_checkpoints": checkpoints, "kept_snapshot": snapshot,
                                "kept_snapshot_disk": snapshot_disk})
        finally:
            await resources.close()
    return results


# --- both variants ---------------------------------------------------------------------------------------
def _run_variant(tree: Path) -> list[dict[str, Any]]:
    """The measurement, run on the code in `tree` (its packages first on the path)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, "-m", "bench.storage", "--measure", out.name], cwd=tree, env=env,
                       check=True)
        return list(json.loads(Path(out.name).read_text()))


def _baseline_tree(rev: str, into: Path) -> Path:
    """`rev` checked out in a temporary worktree, with this benchmark's own files copied in."""
    tree = into / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), rev], check=True)
    for name in ("storage.py", "_checkpoint_bytes.py"):
        shutil.copy(ROOT / "bench" / name, tree / "bench" / name)
    return tree


def _kib(n: float) -> str:
    return f"{n / 1024:8.1f}"


def _report(rev: str, before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    print("\nBytes written while a review runs (KiB): checkpoint tables, PR snapshot, and per checkpoint saved")
    print(f"{'PR':<18}{'variant':<16}{'ckpts':>6}{'checkpoints':>13}{'snapshot':>10}{'total':>10}{'per ckpt':>10}")
    for b, a in zip(before, after, strict=True):
        for label, r in ((f"before {rev[:7]}", b), ("after", a)):
            total = r["written_checkpoints"] + r["written_snapshot"]
            print(f"{r['pr']:<18}{label:<16}{r['checkpoints']:>6}{_kib(r['written_checkpoints']):>13}"
                  f"{_kib(r['written_snapshot']):>10}{_kib(total):>10}{_kib(total / max(r['checkpoints'], 1)):>10}")
        ratio = (b["written_checkpoints"] + b["written_snapshot"]) / max(a["written_checkpoints"]
                                                                         + a["written_snapshot"], 1)
        print(f"{'':<18}{'written before/after':<22}{ratio:>8.1f}x")
    print("\nBytes kept once the review finished (KiB): job row (of it the review), events, checkpoints, PR snapshot"
          " (until the retention sweep; on disk compressed)")
    print(f"{'PR':<18}{'variant':<16}{'job':>8}{'review':>8}{'events':>8}{'ckpts':>8}{'snapshot':>10}"
          f"{'(disk)':>8}{'total':>9}{'w/o snap':>10}")
    for b, a in zip(before, after, strict=True):
        for label, r in ((f"before {rev[:7]}", b), ("after", a)):
            without = r["kept_job"] + r["kept_events"] + r["kept_checkpoints"]
            print(f"{r['pr']:<18}{label:<16}{_kib(r['kept_job'])}{_kib(r['kept_review'])}{_kib(r['kept_events'])}"
                  f"{_kib(r['kept_checkpoints'])}{_kib(r['kept_snapshot']):>10}{_kib(r['kept_snapshot_disk'])}"
                  f"{_kib(without + r['kept_snapshot']):>9}{_kib(without):>10}")
    worst = max(r["kept_job"] + r["kept_events"] + r["kept_checkpoints"] for r in after)
    print(f"\ngoal: at most {GOAL_KEPT_BYTES // 1024} KiB kept per finished review (job, events, checkpoints); "
          f"largest here {worst / 1024:.1f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="9bcdbfd", help="commit measured as 'before'")
    parser.add_argument("--measure", metavar="OUT", help=argparse.SUPPRESS)  # one variant, into OUT (JSON)
    args = parser.parse_args()
    if args.measure:
        Path(args.measure).write_text(json.dumps(asyncio.run(_measure())))
        return
    with tempfile.TemporaryDirectory(prefix="pr-review-storage-") as tmp:
        tree = _baseline_tree(args.baseline, Path(tmp))
        try:
            before = _run_variant(tree)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    after = _run_variant(ROOT)
    _report(args.baseline, before, after)


if __name__ == "__main__":
    main()
