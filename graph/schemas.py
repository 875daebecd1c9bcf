"""JSON schemas the model's answers are decoded against (vLLM guided decoding enforces them).

Strings and arrays are bounded so that even a weak model closes the object within max_tokens.
"""

from __future__ import annotations

from typing import Any

from prreview.models import Severity, Verdict

SEVERITIES = [s.value for s in Severity]
VERDICTS = [v.value for v in Verdict]
MAX_FINDINGS_PER_GROUP = 8


def group_review_schema(paths: list[str]) -> dict[str, Any]:
    """Findings for one group; `path` may only name a file of the group."""
    finding = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "enum": sorted(set(paths))},
            "line": {"type": "integer", "minimum": 1, "description": "n of the R<n> or L<n> tag"},
            "end_line": {"type": ["integer", "null"], "minimum": 1,
                         "description": "last line of a multi-line finding, same side and hunk"},
            "side": {"type": "string", "enum": ["RIGHT", "LEFT"],
                     "description": "RIGHT for R<n>, LEFT for L<n>"},
            "severity": {"type": "string", "enum": SEVERITIES},
            "category": {"type": "string", "maxLength": 40},
            "title": {"type": "string", "maxLength": 120},
            "body": {"type": "string", "maxLength": 600},
            "suggestion": {"type": ["string", "null"], "maxLength": 400,
                           "description": "replacement code for the lines, or null"},
        },
        "required": ["path", "line", "end_line", "side", "severity", "category", "title", "body",
                     "suggestion"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"findings": {"type": "array", "items": finding, "maxItems": MAX_FINDINGS_PER_GROUP}},
        "required": ["findings"],
        "additionalProperties": False,
    }


SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "maxLength": 1200},
        "verdict": {"type": "string", "enum": VERDICTS},
    },
    "required": ["summary", "verdict"],
    "additionalProperties": False,
}
