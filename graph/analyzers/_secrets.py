"""A small secret scanner over the changed lines: well-known token formats, private keys, and
credential-named assignments of high-entropy literals. The secret itself is never repeated in
the review (it is public once posted); findings show a redacted form.

Anyone who can open a pull request chooses the lines scanned here, so the patterns run on RE2
(linear time, no backtracking), on the first `MAX_LINE_CHARS` characters of a line, in a worker
process with a hard timeout (`graph.offload`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2

from graph.analyzers._base import AnalyzerResult, SourceFile
from graph.offload import CpuPool, shared_pool

MAX_LINE_CHARS = 4096  # of each changed line, scanned; credentials sit near the start of a line
DEFAULT_TIMEOUT_S = 30.0


def linear(pattern: str) -> Any:
    """A compiled RE2 pattern: matching time linear in the text, whatever the text."""
    return re2.compile(pattern)


@dataclass(frozen=True)
class SecretRule:
    rule: str
    pattern: Any  # an RE2 pattern (`linear`)
    title: str
    severity: str = "critical"


RULES: tuple[SecretRule, ...] = (
    SecretRule("aws-access-key-id", linear(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "AWS access key ID"),
    SecretRule("github-token",
               linear(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
               "GitHub token"),
    SecretRule("private-key", linear(r"-----BEGIN (?:[A-Z0-9]+ )?PRIVATE KEY(?: BLOCK)?-----"),
               "Private key"),
    SecretRule("slack-token", linear(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"), "Slack token"),
    SecretRule("google-api-key", linear(r"\bAIza[0-9A-Za-z_\-]{35}\b"), "Google API key"),
    SecretRule("stripe-live-key", linear(r"\b(?:sk|rk)_live_[0-9a-zA-Z]{16,}\b"), "Stripe live key"),
)
# `api_key = "..."`, `"password": "..."`, `SECRET_TOKEN := '...'`: a credential-like name given a literal.
# The value is quoted alike on both sides (three alternatives: RE2 has no backreferences).
_ASSIGNMENT = linear(
    r"""(?i)(?P<name>[\w.-]{0,64}(?:api[_-]?key|secret|token|passw(?:or)?d|pwd|credential|private[_-]?key|"""
    r"""access[_-]?key|auth[_-]?key)[\w.-]{0,64})["']?\s*(?::=|=>|[:=])\s*[rbuf]?"""
    r"""(?:"(?P<dq>[^"'`\s]{8,})"|'(?P<sq>[^"'`\s]{8,})'|`(?P<bq>[^"'`\s]{8,})`)""")
_PLACEHOLDER = linear(r"(?i)example|sample|dummy|placeholder|changeme|your[_-]|xxxx|\*\*\*|\$\{|\{\{|"
                      r"<[^>]+>|^(?:test|fake|mock)|redacted")
# Names that hold a reference to a secret (its name, path, env var), not the secret itself.
_REFERENCE_NAME = linear(r"(?i)(?:name|id|path|file|url|uri|header|env|var|field|type|prefix|dir)$")
MIN_ENTROPY_BITS = 3.0  # per character; random keys score about 4, words and paths under 3


def entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def redact(secret: str) -> str:
    return f"{secret[:4]}…({len(secret)} characters)" if len(secret) > 8 else "…"


class SecretScanner:
    name = "secrets"
    needs_content = False  # scans the changed lines only

    def __init__(self, *, cpu: CpuPool | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.cpu, self.timeout_s = cpu, timeout_s

    def wants(self, path: str) -> bool:
        return True

    async def run(self, files: Sequence[SourceFile], workdir: Path) -> list[AnalyzerResult]:
        lines = [(file.path, dict(file.added)) for file in files]
        return await (self.cpu or shared_pool()).run(scan_files, lines, timeout_s=self.timeout_s)


def scan_files(files: Sequence[tuple[str, Mapping[int, str]]]) -> list[AnalyzerResult]:
    """Every finding on the given changed lines (path, {line number: text}), in line order."""
    return [result for path, added in files for line, text in sorted(added.items())
            for result in scan_line(path, line, text)]


def scan_line(path: str, line: int, text: str) -> list[AnalyzerResult]:
    text = text[:MAX_LINE_CHARS]
    for rule in RULES:
        match = rule.pattern.search(text)
        if match:
            return [_result(path, line, rule.rule, rule.title, rule.severity, match.group(0))]
    match = _ASSIGNMENT.search(text)
    if match:
        name = match.group("name")
        value = match.group("dq") or match.group("sq") or match.group("bq")
        looks_random = (entropy(value) >= MIN_ENTROPY_BITS and any(c.isdigit() for c in value)
                        and any(c.isalpha() for c in value))
        if looks_random and not _PLACEHOLDER.search(value) and not _REFERENCE_NAME.search(name):
            return [_result(path, line, "generic-secret", f"Hard-coded secret in `{name}`",
                            "critical", value)]
    return []


def _result(path: str, line: int, rule: str, title: str, severity: str, secret: str) -> AnalyzerResult:
    body = (f"The secret scanner found what looks like a credential ({rule}: `{redact(secret)}`) committed "
            "in the source. Anyone who can read the repository can use it, and it stays in the git "
            "history: revoke it, then load it from the environment or a secret store.")
    return AnalyzerResult(path=path, line=line, severity=severity, rule=rule, title=title[:120], body=body,
                          category="security")
