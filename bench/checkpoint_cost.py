"""What crash safety costs: time and bytes per graph step with `durability="sync"` against `"exit"`.

The review graph runs in this process (as actors/runner.py builds it: LangGraph's
`AsyncPostgresSaver` on a fresh PostgreSQL database, PR snapshots in the same database) against
the fake GitHub and a scripted LLM that answers at once, so the checkpoints are most of what a
step costs besides the review's own work. `sync` saves every step before the next one starts (what
pr-review runs: a crash loses at most the step in flight); `exit` saves once, when the run ends.
Runs of the two modes alternate, and each figure is the median of `--runs` runs.

    python -m bench.checkpoint_cost [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from bench._checkpoint_bytes import PRCase, counting_database, install_prs, written
from graph.builder import build_review_graph
from graph.context import ReviewContext
from graph.github import GitHubClient
from graph.llm import LLMClient, NullMeter
from graph.state import ReviewState
from prreview.db import open_pool
from prreview.store import JobStore
from tests.fakes import FakeGitHub, ScriptedLLM

Durability = Literal["sync", "exit"]
MODES: tuple[Durability, ...] = ("sync", "exit")


class _Quiet:
    async def emit(self, kind: str, data: dict[str, Any], *, progress: dict[str, Any] | None = None,
                   files_done_delta: int = 0) -> None: ...

    async def head_sha(self, sha: str) -> None: ...


class TimedSaver(AsyncPostgresSaver):
    """The service's checkpointer, noting when its writes are in flight (parallel tasks write at
    once: `saving_s` counts the time during which at least one write was under way)."""

    intervals: list[tuple[float, float]]

    def reset(self) -> None:
        self.intervals = []

    @property
    def saving_s(self) -> float:
        total, end = 0.0, float("-inf")
        for began, ended in sorted(self.intervals):
            total += max(0.0, ended - max(began, end))
            end = max(end, ended)
        return total

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await super().aput(*args, **kwargs)
        finally:
            self.intervals.append((began, time.perf_counter()))

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        began = time.perf_counter()
        try:
            await super().aput_writes(*args, **kwargs)
        finally:
            self.intervals.append((began, time.perf_counter()))


@dataclass
class Sample:
    seconds: float
    saving_s: float  # of which inside the checkpointer's writes
    steps: int  # graph steps (super-steps) the run took
    checkpoints: int  # checkpoints saved
    checkpoint_bytes: int


async def _review(case: PRCase, mode: Durability, *, url: str, saver: TimedSaver, store: JobStore,
                  github: FakeGitHub, llm: ScriptedLLM) -> Sample:
    gh = GitHubClient(github.url, None)
    model = LLMClient(llm.base_url, model=None, api_key=None, timeout_s=30, max_retries=1, max_tokens=1024)
    context = ReviewContext(github=gh, llm=model, meter=NullMeter(), progress=_Quiet(), context_tokens=8192,
                            max_completion_tokens=1024, max_llm_calls=50, snapshots=store)
    thread = uuid.uuid4().hex
    graph = build_review_graph(saver)
    start = ReviewState(job_id=thread, repo=case.repo, number=case.number, options={})
    saver.reset()
    try:
        began = time.perf_counter()
        await graph.ainvoke(start, {"configurable": {"thread_id": thread}}, context=context, durability=mode)
        seconds, saving_s = time.perf_counter() - began, saver.saving_s
        # steps: the run's last checkpoint counts them (its `step` metadata), in either mode
        last = await saver.aget_tuple({"configurable": {"thread_id": thread}})
        assert last is not None
        steps = int(last.metadata.get("step", 0)) + 1  # steps are numbered from -1 (the input)
    finally:
        await gh.aclose()
        await model.aclose()
    wrote = written(url, thread)
    return Sample(seconds, saving_s, steps, wrote.checkpoints, wrote.checkpoint_bytes)


async def _bench(runs: int) -> list[tuple[PRCase, dict[Durability, list[Sample]]]]:
    results = []
    with FakeGitHub() as github, ScriptedLLM() as llm, counting_database() as url:
        cases = install_prs(github)
        pool = await open_pool(url, max_size=8)
        try:
            saver = TimedSaver(conn=pool)  # type: ignore[arg-type]
            store = JobStore(pool)
            def review(case: PRCase, mode: Durability) -> Awaitable[Sample]:
                return _review(case, mode, url=url, saver=saver, store=store, github=github, llm=llm)

            for case in cases:
                await review(case, "sync")  # warm-up: worker processes, connections, caches
                samples: dict[Durability, list[Sample]] = {m: [] for m in MODES}
                for _ in range(runs):
                    for mode in MODES:
                        samples[mode].append(await review(case, mode))
                results.append((case, samples))
        finally:
            await pool.close()
    return results


def _median(samples: list[Sample], field: str) -> float:
    return statistics.median(float(getattr(s, field)) for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per PR and mode")
    args = parser.parse_args()
    results = asyncio.run(_bench(args.runs))
    print(f"\nmedian of {args.runs} runs per PR and mode; scripted LLM answering at once")
    print("run: wall time of the review; saving: of it, time with a checkpoint write under way")
    print(f"{'PR':<18}{'mode':<6}{'steps':>6}{'ckpts':>6}{'run ms':>9}{'ms/step':>9}{'saving ms/step':>16}"
          f"{'KiB':>8}{'KiB/step':>10}")
    for case, samples in results:
        for mode in MODES:
            s = samples[mode]
            steps, ms, kib = _median(s, "steps"), _median(s, "seconds") * 1000, _median(s, "checkpoint_bytes") / 1024
            print(f"{case.name:<18}{mode:<6}{steps:>6.0f}{_median(s, 'checkpoints'):>6.0f}{ms:>9.0f}{ms / steps:>9.1f}"
                  f"{_median(s, 'saving_s') * 1000 / steps:>16.1f}{kib:>8.1f}{kib / steps:>10.1f}")
        sync, exit_ = samples["sync"], samples["exit"]
        steps = _median(sync, "steps")
        extra_ms = (_median(sync, "seconds") - _median(exit_, "seconds")) * 1000 / steps
        print(f"{'':<18}sync/exit: time {_median(sync, 'seconds') / _median(exit_, 'seconds'):.2f}x "
              f"({extra_ms:+.1f} ms per step), bytes "
              f"{_median(sync, 'checkpoint_bytes') / max(_median(exit_, 'checkpoint_bytes'), 1):.2f}x")


if __name__ == "__main__":
    main()
