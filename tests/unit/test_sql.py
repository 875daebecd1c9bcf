from __future__ import annotations

import pytest

from prreview.sql import migrations, parse_queries, queries


def test_every_named_query_loads_and_names_are_unique() -> None:
    loaded = queries()
    assert {"submit", "claim", "start", "heartbeat", "requeue", "finish", "cancel", "recover"} <= set(loaded)
    assert all(sql and not sql.endswith(";") for sql in loaded.values())


def test_duplicate_query_names_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [version for version, _, _ in migrations()]
    assert versions == list(range(1, len(versions) + 1))
