"""Test doubles of the outside world, for tests and benchmarks (`bench/`).

`FakeGitHub` (package `github`) and `ScriptedLLM` (package `llm`) extend the demo's servers in
`prreview.demo` with what tests need: faults, hangs, rate limits, writes, records, synthetic PRs.
Each package also runs standalone: `python -m tests.fakes.github`, `python -m tests.fakes.llm`.
"""

from prreview.demo import FakeFile
from tests.fakes.github import FakeGitHub, RecordedRequest
from tests.fakes.llm import LLMCall, ScriptedLLM

__all__ = ["FakeFile", "FakeGitHub", "LLMCall", "RecordedRequest", "ScriptedLLM"]
