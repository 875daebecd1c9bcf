"""Text from a PR or a model, made safe for a terminal.

rich's markup (`[bold]`, `[/bold]`, `[link=...]`) is never parsed in such text: the CLI prints it
as `rich.text.Text` or with `markup=False`. Control characters are shown, not obeyed: an escape
sequence in a file name could otherwise move the cursor, rewrite lines or set a hyperlink.
"""

from __future__ import annotations

import re

from rich.text import Text

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and isolates
# that make text read differently from what it is ("Trojan Source").
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """`text` with every control character written out (`\\x1b`), line breaks kept as `\\n`."""
    return _UNPRINTABLE.sub(_shown, str(text).replace("\r\n", "\n"))


def error_text(message: object) -> Text:
    """`error: <message>` for stderr, the message taken literally."""
    return Text.assemble(("error:", "red"), " ", printable(message))
