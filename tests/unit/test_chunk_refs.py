"""The plan checkpoints which part of which file each group reviews, not the diff text; the group
task renders the same text again from the PR's files."""

from __future__ import annotations

from typing import Any

from graph import compute
from graph.context import estimate_tokens
from graph.plan import Budget, chunk_file, pack
from prreview.demo._patch import unified_patch


def _file(path: str, lines: int, every: int = 3) -> dict[str, Any]:
    base = "".join(f"def f_{j}(x):\n    return x + {j}\n" for j in range(lines))
    head = "".join(f"def f_{j}(x):\n    return x + {j * 10 if j % every == 0 else j}\n" for j in range(lines))
    return {"path": path, "status": "modified", "additions": lines // every, "deletions": lines // every,
            "patch": unified_patch(base, head)}


def test_chunk_references_render_the_text_the_plan_measured() -> None:
    files = [_file("src/big.py", 300), _file("src/mid.py", 40), _file("src/small.py", 4)]
    evidence = [{"path": "src/big.py", "line": 8, "source": "ruff", "rule": "S307", "severity": "major",
                 "title": "eval"}]
    planned = compute.plan_review(files, {}, {}, {}, {"title": "t", "body": "", "commit_messages": []}, "o/r", 1,
                                  None, evidence, context_tokens=3000, max_completion_tokens=512, max_llm_calls=20,
                                  job_max_tokens=0, count_tokens=estimate_tokens)
    groups = planned["groups"]
    assert len(groups) > 1 and not planned["skipped"]
    assert all("text" not in chunk for g in groups for chunk in g["chunks"])
    big_parts = sorted(c["part"] for g in groups for c in g["chunks"] if c["path"] == "src/big.py")
    assert len(big_parts) > 1 and big_parts == list(range(len(big_parts)))  # cut in parts, each once

    # what the plan packed, with the same budget: the texts each group must show
    diffs = compute.diffs_of(files)
    budget = Budget(group_tokens=planned["group_tokens"], max_groups=18, call_tokens=0)
    expected = pack(diffs, budget, estimate_tokens, {"src/big.py": evidence})
    by_path = {d.path: chunk_file(d, budget.group_tokens, estimate_tokens, evidence if d.path == "src/big.py" else [])
               for d in diffs}
    all_texts = {c.text for chunks in by_path.values() for c in chunks}
    assert {c.text for g in expected.groups for c in g.chunks} == all_texts
    rendered = []
    for group in groups:
        texts = compute.chunk_texts([f for f in files if f["path"] in group["paths"]], {},
                                    {"src/big.py": evidence}, group["chunks"], group["budget"], estimate_tokens)
        assert [estimate_tokens(t) for t in texts] == [c["tokens"] for c in group["chunks"]]
        rendered += texts
    assert sorted(rendered) == sorted(all_texts)
    assert any("R8     ruff S307 (major): eval" in t for t in rendered)
