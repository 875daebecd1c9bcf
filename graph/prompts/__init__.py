"""Prompt templates, kept as data files beside this module, and the text they are filled with."""

from __future__ import annotations

from graph.prompts._build import (
    group_prompt,
    guidance,
    other_changes,
    scope_note,
    skipped_summary,
    summary_prompt,
)
from graph.prompts._text import as_data, neutralize, template

__all__ = ["as_data", "group_prompt", "guidance", "neutralize", "other_changes", "scope_note",
           "skipped_summary", "summary_prompt", "template"]
