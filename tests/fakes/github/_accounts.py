"""Who wrote something on the fake GitHub: people (`type: User`) and Apps' bots (`<slug>[bot]`,
`type: Bot`), as GitHub shows them in `user`, `sender` and `owner` fields."""

from __future__ import annotations

from typing import Any

from prreview.demo._github_model import user_json


def account_json(base: str, login: str) -> dict[str, Any]:
    """GitHub's user object for `login`; a login ending in `[bot]` is an App's bot."""
    data = user_json(base, login)
    if login.endswith("[bot]"):
        data["type"] = "Bot"
        data["html_url"] = f"{base}/apps/{login.removesuffix('[bot]')}"
    return data
