"""`pr-review keys create|list|revoke`: API keys, stored hashed in the review database.

Run where DATABASE_URL points at the service's database (in a cluster: `kubectl exec` into the
head pod); the whole key is printed once, at creation, and never stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.table import Table

from prreview.access import ALL_RIGHTS, Right, create_key, revoke_key
from prreview.config import load_settings
from prreview.db import migrate, open_pool, resolve_database_url
from prreview.lifecycle import Quota
from prreview.store import Statements

keys_app = typer.Typer(no_args_is_help=True, help="API keys of the review API (every /v1 route needs one).")
T = TypeVar("T")


def _with_database(work: Callable[[Statements], Awaitable[T]]) -> T:
    url = resolve_database_url(load_settings())
    migrate(url)

    async def run() -> T:
        pool = await open_pool(url, max_size=1)
        try:
            return await work(Statements(pool))
        finally:
            await pool.close()

    return asyncio.run(run())


@keys_app.command("create")
def create(name: str,
           read_only: bool = typer.Option(False, "--read-only", help="may only read its own reviews"),
           no_publish: bool = typer.Option(False, "--no-publish", help="may not publish reviews to GitHub"),
           admin: bool = typer.Option(False, "--admin", help="may do everything, on every submitter's reviews"),
           max_active: int = typer.Option(None, "--max-active", min=1, help="queued or running reviews at once"),
           per_hour: int = typer.Option(None, "--per-hour", min=1, help="reviews submitted per hour")) -> None:
    """Make a key named NAME and print it (once: only its hash is kept)."""
    if admin:
        rights = ALL_RIGHTS
    elif read_only:
        rights = frozenset({Right.READ})
    else:
        rights = frozenset({Right.READ, Right.SUBMIT} | (set() if no_publish else {Right.PUBLISH}))
    try:
        token = _with_database(lambda sql: create_key(sql, name, rights, Quota(max_active, per_hour)))
    except ValueError as exc:
        Console(stderr=True).print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    Console().print(token, markup=False, highlight=False)


@keys_app.command("list")
def list_keys(all_keys: bool = typer.Option(False, "--all", help="revoked keys too")) -> None:
    """The keys: name, rights, quotas, when made (never the key itself)."""
    rows = _with_database(lambda sql: sql.all("list_api_keys", all=all_keys))
    table = Table("name", "id", "rights", "max active", "per hour", "created", "revoked", box=None)
    for column in table.columns:
        column.overflow = "fold"  # names and ids are printed whole, whatever the terminal's width
    for row in rows:
        table.add_row(row["name"], row["id"], ",".join(row["rights"]), str(row["max_active"] or "-"),
                      str(row["max_per_hour"] or "-"), row["created_at"].isoformat(timespec="seconds"),
                      row["revoked_at"].isoformat(timespec="seconds") if row["revoked_at"] else "")
    Console(width=200).print(table, markup=False)


@keys_app.command("revoke")
def revoke(name: str) -> None:
    """Revoke the key named NAME (or with that id): it stops working at once."""
    if not _with_database(lambda sql: revoke_key(sql, name)):
        Console(stderr=True).print(f"error: no active key named {name!r}", markup=False)
        raise typer.Exit(1)
    Console().print(f"revoked {name}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
