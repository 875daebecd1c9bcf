"""Fakes of the outside world for tests, benchmarks and `pr-review demo`.

`FakeGitHub` serves GitHub's REST shapes and `ScriptedLLM` an OpenAI-compatible chat API, both
on 127.0.0.1 in a background thread. Names load lazily so `python -m prreview.fakes.github`
does not import its own module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prreview.fakes._github_model import FakeFile
    from prreview.fakes._server import BackgroundServer
    from prreview.fakes.github import FakeGitHub, RecordedRequest
    from prreview.fakes.llm import LLMCall, ScriptedLLM
    from prreview.fakes.sample_pr import SAMPLE_PR_DEFECT_LINES, SAMPLE_PR_DEFECTS, install_sample_pr

__all__ = ["SAMPLE_PR_DEFECTS", "SAMPLE_PR_DEFECT_LINES", "BackgroundServer", "FakeFile", "FakeGitHub",
           "LLMCall", "RecordedRequest", "ScriptedLLM", "install_sample_pr"]

_HOMES = {
    "FakeFile": "prreview.fakes._github_model",
    "BackgroundServer": "prreview.fakes._server",
    "FakeGitHub": "prreview.fakes.github",
    "RecordedRequest": "prreview.fakes.github",
    "LLMCall": "prreview.fakes.llm",
    "ScriptedLLM": "prreview.fakes.llm",
    "SAMPLE_PR_DEFECTS": "prreview.fakes.sample_pr",
    "SAMPLE_PR_DEFECT_LINES": "prreview.fakes.sample_pr",
    "install_sample_pr": "prreview.fakes.sample_pr",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'prreview.fakes' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
