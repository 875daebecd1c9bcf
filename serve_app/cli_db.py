"""`pr-review db migrate`: the schema migration every deployment also runs by itself at start,
for operators who prefer to run it as a Kubernetes Job before a rollout."""

from __future__ import annotations

import typer
from rich.console import Console

from prreview.config import load_settings
from prreview.db import migrate, resolve_database_url, schema_version
from prreview.sql import migrations

db_app = typer.Typer(no_args_is_help=True, help="The review database (DATABASE_URL, else the embedded one).")


@db_app.command("migrate")
def migrate_command() -> None:
    """Create or upgrade the schema (pr-review's tables and LangGraph's checkpoint tables).
    Idempotent, and safe beside running replicas: every step is applied once, under a lock."""
    console = Console()
    url = resolve_database_url(load_settings())
    before = schema_version(url)
    applied = migrate(url)
    latest = migrations()[-1][0]
    if applied:
        console.print(f"migrated the database from version {before} to {latest} "
                      f"({len(applied)} migration(s) applied)", highlight=False)
    else:
        console.print(f"the database is at version {latest}: nothing to do", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
