"""The demo model's answers: a deterministic toy reviewer, so end-to-end runs without a
real model still produce real findings, a summary and a verdict.

It reads the agent's prompt format (`<pr_file path="...">` blocks whose lines are tagged
`R<new line>` / `L<old line>`), flags added lines that match a few well-known defect patterns,
and shapes every answer to the JSON schema the request names.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prreview.demo._json_schema import conform, minimal_instance

MAX_FINDINGS = 8
MAX_LINE_CHARS = 400
SEVERITIES = ("critical", "major", "minor", "nit")

_FILE_BLOCK = re.compile(r'<pr_file\s+path="([^"]*)"[^>]*>(.*?)</pr_file>', re.S)
_ADDED_LINE = re.compile(r"^R(\d+)\s*\+ \| (.*)$", re.M)


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    severity: str
    category: str
    title: str
    body: str
    advice: str | None = None  # how to fix it, in words (ends the finding's body)
    also: re.Pattern[str] | None = None  # a second pattern the line must match too
    fix: Callable[[str], str | None] | None = None  # the corrected line: a suggestion, as code only

    def suggestion(self, line: str) -> str | None:
        fixed = self.fix(line) if self.fix else None
        return fixed if fixed is not None and fixed != line else None

    def matches(self, text: str) -> bool:
        # Only the start of a line: some patterns backtrack, and a PR may hold a 20,000-character line.
        text = text[:MAX_LINE_CHARS]
        return bool(self.pattern.search(text)) and (self.also is None or bool(self.also.search(text)))


def _secret_from_env(line: str) -> str | None:
    match = re.match(r"^(\s*)([A-Za-z_]\w*)\s*=", line)
    return f'{match.group(1)}{match.group(2)} = os.environ["{match.group(2)}"]' if match else None


def _awaited(line: str) -> str:
    stripped = line.lstrip()
    return line[: len(line) - len(stripped)] + "await " + stripped


_SQL_KEYWORDS = re.compile(r"\b(SELECT\b.*\bFROM|INSERT\s+INTO|UPDATE\b.*\bSET|DELETE\s+FROM)\b", re.I)

RULES: tuple[Rule, ...] = (
    Rule(re.compile(r"""(?<![\w])f["']|\.format\(|["']\s*%\s*[\w(]|["']\s*\+\s*\w"""), "critical", "security",
         "SQL built by string formatting (injection)",
         "The query text is assembled from values with string formatting, so a crafted value can "
         "change the SQL that runs. Pass the values as bound parameters instead.",
         "Use placeholders ($1, %s) and pass the values as query arguments.", also=_SQL_KEYWORDS),
    Rule(re.compile(r"(?<![\w.])(eval|exec)\s*\("), "critical", "security",
         "eval/exec of untrusted input",
         "Evaluating text as Python runs whatever the caller sends: remote code execution. Parse "
         "the data with a safe parser instead.",
         "Use json.loads() (or ast.literal_eval for literals) and validate the result.",
         fix=lambda line: re.sub(r"(?<![\w.])eval\s*\(", "json.loads(", line)),
    Rule(re.compile(r"""(?i)\w*(api[_-]?key|secret|passw(or)?d|token|private[_-]?key)\w*\s*[:=]\s*["'][^"'\s]{6,}["']"""),
         "critical", "security", "Hard-coded secret",
         "A credential is committed in the source: it leaks to everyone with read access and "
         "cannot be rotated without a deploy. Read it from the environment or a secret store.",
         'Read it with os.environ["NAME"].', fix=_secret_from_env),
    Rule(re.compile(r"^\s*except\s*:"), "major", "error-handling", "Bare except swallows every error",
         "A bare `except:` also catches KeyboardInterrupt, SystemExit and programming errors, and "
         "hides the failure from callers and logs.",
         "Catch the specific exception you expect and log or re-raise it."),
    Rule(re.compile(r"(?i)\bpage\s*\*\s*\w*(size|limit|per_page)\b"), "major", "correctness",
         "Off-by-one in pagination offset",
         "With 1-based pages, `page * size` skips the whole first page; the offset should be "
         "`(page - 1) * size`.",
         "Subtract one from the page before multiplying.",
         fix=lambda line: re.sub(r"\bpage\s*\*", "(page - 1) *", line, count=1)),
    Rule(re.compile(r"^\s*asyncio\.(sleep|gather|wait_for|wait|shield)\("), "major", "concurrency",
         "Coroutine is never awaited",
         "Calling a coroutine function without `await` only creates the coroutine: nothing runs "
         "and Python warns 'coroutine was never awaited'.",
         "Add `await` before the call.", fix=_awaited),
    Rule(re.compile(r"^\s*\w+\s*=\s*open\("), "major", "resource-leak", "File handle is never closed",
         "The file is opened without a context manager, so it stays open if anything raises.",
         "Use `with open(...) as f:`."),
    Rule(re.compile(r"^\s*print\("), "minor", "maintainability", "Debug print left in",
         "print() bypasses the logging configuration and clutters stdout in production.",
         "Use the module logger.", fix=lambda line: line.replace("print(", "log.info(", 1)),
    Rule(re.compile(r"\b(TODO|FIXME|XXX)\b"), "nit", "maintainability", "Unresolved TODO",
         "A TODO in new code tends to stay; track it in an issue or resolve it before merging.", None),
)


def parse_pr_files(text: str) -> list[tuple[str, list[tuple[int, str]]]]:
    """(path, [(new line number, text) of each added line]) for every <pr_file> block."""
    return [(html.unescape(path), [(int(n), line) for n, line in _ADDED_LINE.findall(body)])
            for path, body in _FILE_BLOCK.findall(text)]


def review_findings(text: str, limit: int = MAX_FINDINGS) -> list[dict[str, Any]]:
    findings: list[dict[str, Any]] = []
    for path, added in parse_pr_files(text):
        for line, code in added:
            rule = next((r for r in RULES if r.matches(code)), None)
            if rule is None:
                continue
            findings.append({"path": path, "line": line, "end_line": None, "side": "RIGHT",
                             "severity": rule.severity, "category": rule.category, "title": rule.title,
                             "body": f"{rule.body} {rule.advice}" if rule.advice else rule.body,
                             "suggestion": rule.suggestion(code)})
    findings.sort(key=lambda f: SEVERITIES.index(f["severity"]))  # stable: file order within a severity
    return findings[:limit]


_SEVERITY_MARKERS = (
    re.compile(r"""(?i)["']?severity["']?\s*[:=]\s*["']?(critical|major|minor|nit)\b"""),
    re.compile(r"(?im)^\s*(?:[-*]\s*)?\[(critical|major|minor|nit)\]"),
)


def summarize(text: str) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for marker in _SEVERITY_MARKERS:
        counts.update(m.lower() for m in marker.findall(text))
    total = sum(counts.values())
    if counts["critical"] or counts["major"]:
        verdict = "request_changes"
    elif total:
        verdict = "comment"
    else:
        verdict = "approve"
    if not total:
        return {"summary": "No issues found in the changed lines. The change looks ready to merge.",
                "verdict": verdict}
    parts = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES if counts[s])
    advice = ("The critical and major issues should be fixed before merging."
              if verdict == "request_changes" else "None of them blocks the merge.")
    noun = "issue" if total == 1 else "issues"
    return {"summary": f"Found {total} {noun} ({parts}). {advice}", "verdict": verdict}


def _message_text(request: dict[str, Any], role: str | None = None) -> str:
    parts: list[str] = []
    for message in request.get("messages") or []:
        if not isinstance(message, dict) or (role and message.get("role") != role):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict)]
    return "\n".join(parts)


def all_message_text(request: dict[str, Any]) -> str:
    return _message_text(request)


def default_responder(request: dict[str, Any]) -> dict[str, Any] | str:
    """The default answer to a chat request (see the module docstring)."""
    response_format = request.get("response_format") or {}
    spec = response_format.get("json_schema") or {}
    name = spec.get("name")
    schema = spec.get("schema")
    user_text = _message_text(request, "user")
    if name == "group_review":
        answer: Any = {"findings": review_findings(user_text)}
    elif name == "review_summary":
        answer = summarize(user_text)
    elif isinstance(schema, dict):
        answer = minimal_instance(schema, schema)
    elif response_format.get("type") == "json_object":
        answer = {"text": "ok"}
    else:
        return "ok"
    shaped: dict[str, Any] = conform(answer, schema, schema) if isinstance(schema, dict) else answer
    if name == "group_review":
        _fit_budget(shaped, request.get("max_completion_tokens") or request.get("max_tokens"))
    return shaped


def _fit_budget(answer: dict[str, Any], max_tokens: Any) -> None:
    """Drop the least severe findings until the answer fits in max_tokens (a well-behaved model
    closes its JSON rather than being cut off); findings are sorted most severe first."""
    findings = answer.get("findings")
    if not isinstance(max_tokens, int) or not isinstance(findings, list):
        return
    while findings and len(json.dumps(answer)) >= 4 * max_tokens:
        findings.pop()
