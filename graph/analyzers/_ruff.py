"""ruff on the changed Python files, run as a subprocess on their head contents in a temp dir.

`--isolated`: the reviewed repository's own ruff configuration is not read, so a PR cannot turn
rules off (or point ruff at files outside the temp dir) for its own review.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graph.analyzers._base import AnalyzerResult, AnalyzerUnavailable, SourceFile, safe_relative

# Bugs, security and error-prone patterns; not style, which the model and formatters cover.
DEFAULT_SELECT = ("E9", "E7", "F", "B", "S", "ASYNC")
DEFAULT_IGNORE = ("S101", "S311", "S603", "S607", "B008", "B905", "E731", "E741")
MAX_ITEMS = 5000  # of ruff's results read; more come only from generated or hostile files

# Longest matching code prefix wins.
_SEVERITY = {
    "E9": "major", "E7": "nit", "E722": "minor", "F": "minor", "F401": "nit", "F403": "nit", "F405": "nit",
    "F5": "major", "F63": "major", "F7": "major", "F82": "major", "B": "minor", "S": "minor", "S102": "major",
    "S105": "major", "S106": "major", "S301": "major", "S307": "major", "S5": "major", "S602": "major",
    "S605": "major", "S608": "major", "S7": "major", "ASYNC": "minor",
}
_CATEGORY = {"E9": "correctness", "E7": "style", "E722": "error-handling", "F": "correctness",
             "B": "bug-risk", "S": "security", "ASYNC": "concurrency"}


def _lookup(table: dict[str, str], code: str, default: str) -> str:
    for length in range(len(code), 0, -1):
        if code[:length] in table:
            return table[code[:length]]
    return default


def find_ruff() -> str | None:
    """The ruff executable: on PATH, or next to this Python (a virtual environment's bin/)."""
    found = shutil.which("ruff")
    if found:
        return found
    beside = Path(sys.executable).parent / "ruff"
    return str(beside) if beside.exists() else None


def _fix_line(item: dict[str, Any], line_text: str | None) -> str | None:
    """ruff's safe fix as the new text of the line, when the fix stays within that one line."""
    fix = item.get("fix") or {}
    row = item["location"]["row"]
    edits = fix.get("edits") or []
    if fix.get("applicability") != "safe" or not edits or line_text is None:
        return None
    if any(e["location"]["row"] != row or e["end_location"]["row"] != row for e in edits):
        return None
    new = line_text
    for edit in sorted(edits, key=lambda e: e["location"]["column"], reverse=True):
        start, end = edit["location"]["column"] - 1, edit["end_location"]["column"] - 1
        new = new[:start] + edit["content"] + new[end:]
    return new if new.strip() and new != line_text else None


class RuffAnalyzer:
    name = "ruff"
    needs_content = True

    def __init__(self, executable: str | None = None, *, select: Sequence[str] = DEFAULT_SELECT,
                 ignore: Sequence[str] = DEFAULT_IGNORE, timeout_s: float = 60.0) -> None:
        self.executable = executable
        self.select, self.ignore, self.timeout_s = list(select), list(ignore), timeout_s

    def wants(self, path: str) -> bool:
        return path.endswith((".py", ".pyi"))

    async def run(self, files: Sequence[SourceFile], workdir: Path) -> list[AnalyzerResult]:
        executable = self.executable or find_ruff()
        if executable is None:
            raise AnalyzerUnavailable("ruff is not installed (pip install ruff)")
        written: dict[str, SourceFile] = {}
        for file in files:
            relative = safe_relative(file.path)
            if relative is None or file.content is None:
                continue
            target = workdir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.content)
            written[relative.as_posix()] = file
        if not written:
            return []
        items = await self._check(executable, workdir, list(written))
        results = []
        root = workdir.resolve()
        lines: dict[str, list[str]] = {}  # each file split once, however many results it has
        for item in items[:MAX_ITEMS]:
            source = written.get(Path(item["filename"]).resolve().relative_to(root).as_posix())
            if source is not None:
                if source.path not in lines:
                    lines[source.path] = (source.content or "").splitlines()
                results.append(self._result(item, source, lines[source.path]))
        return results

    async def _check(self, executable: str, workdir: Path, paths: list[str]) -> list[dict[str, Any]]:
        process = await asyncio.create_subprocess_exec(
            executable, "check", "--isolated", "--no-cache", "--output-format", "json",
            "--select", ",".join(self.select), "--ignore", ",".join(self.ignore), "--", *paths,
            cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode not in (0, 1):  # 1: violations found; anything else: ruff itself failed
            raise RuntimeError(f"ruff exited with {process.returncode}: {err.decode(errors='replace')[:300]}")
        data = json.loads(out or b"[]")
        return data if isinstance(data, list) else []

    @staticmethod
    def _result(item: dict[str, Any], file: SourceFile, lines: list[str]) -> AnalyzerResult:
        code = item.get("code") or "syntax-error"
        line = int(item["location"]["row"])
        end = int((item.get("end_location") or {}).get("row") or line)
        message = str(item.get("message") or code)
        severity = "major" if code == "syntax-error" else _lookup(_SEVERITY, code, "minor")
        body = f"ruff `{code}` ({item.get('name') or 'rule'}): {message}."
        if item.get("url"):
            body += f" See {item['url']}."
        fix = item.get("fix") or {}
        if fix.get("message"):
            body += f" Fix: {fix['message']}."
        line_text = lines[line - 1] if 0 < line <= len(lines) else None
        return AnalyzerResult(path=file.path, line=line, end_line=end if end > line else None,
                              severity=severity, rule=code, title=f"{message} ({code})"[:120], body=body,
                              category=_lookup(_CATEGORY, code, "static-analysis"),
                              suggestion=_fix_line(item, line_text))
