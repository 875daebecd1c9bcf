"""Prompt templates, and untrusted text made safe to put between our tags."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_OUR_TAGS = re.compile(r"<(/?)\s*(pr_[a-z_]+)", re.IGNORECASE)


@cache
def template(name: str) -> str:
    return resources.files("graph.prompts").joinpath(f"{name}.md").read_text()


def neutralize(text: str) -> str:
    """Text that cannot open or close our data tags (`<pr_...>`), however it is written."""
    return _OUR_TAGS.sub(lambda m: f"‹{m.group(1)}{m.group(2)}", text)


def as_data(text: str, limit: int = 4000) -> str:
    """Untrusted PR text, made unable to close or open our data tags, and bounded in size."""
    text = neutralize(text)
    return text if len(text) <= limit else text[:limit] + "\n[... truncated ...]"
