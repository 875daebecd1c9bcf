"""The real vLLM engine on the CPU, inside a real local stack, serving a model built on the spot."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.llm_models import TINY_MODEL_DIRNAME, build_tiny_model

# The scripted-LLM stack's bounds (tests/stack.py) are far too tight for a CPU engine; these are not.
LLM_STACK_ENV = {
    "PR_REVIEW_LLM_TIMEOUT_S": "120",
    "PR_REVIEW_LLM_MAX_RETRIES": "1",
    "PR_REVIEW_LLM_CONTEXT_TOKENS": "4096",  # the CPU profile's max_model_len
    "RAY_metrics_report_interval_ms": "1000",  # vLLM's token counters reach Prometheus within a second
}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / TINY_MODEL_DIRNAME)


@pytest.fixture
def llm_stack(stacks: object, tiny_model: Path) -> object:
    """A stack whose agents call the in-cluster `llm` app (LLM_BASE_URL unset), serving `tiny_model`."""
    env = {**LLM_STACK_ENV, "LLM_MODEL": str(tiny_model)}
    return stacks.get(env, with_llm_app=True)  # type: ignore[attr-defined]
