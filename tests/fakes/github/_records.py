"""What the fake GitHub keeps of every request it received."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RecordedRequest:
    """One request the fake received; `status` is filled in once it is answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names, as sent (Authorization included)
    body: Any
    status: int | None = None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")
