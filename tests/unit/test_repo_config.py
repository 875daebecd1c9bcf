"""`.pr-review.toml`: parsed leniently (a broken key never fails a review), globs as in .gitignore."""

from __future__ import annotations

from graph.repo_config import RepoConfig, glob_match, parse_config


def test_a_full_config_is_read() -> None:
    config = parse_config('''
focus = "SQL injection"
instructions = "We use asyncpg."
ignore = ["docs/", "*.snap", "migrations/**"]
min_severity = "minor"
max_nits = 1
request_changes_at = "critical"
[analyzers]
disable = ["ruff"]
''')
    assert config.focus == "SQL injection" and config.instructions == "We use asyncpg."
    assert config.min_severity == "minor" and config.max_nits == 1 and config.request_changes_at == "critical"
    assert config.enabled(["ruff", "secrets"]) == ["secrets"]
    assert config.keeps("minor") and not config.keeps("nit")
    assert config.ignored_by("docs/a/b.md") == "docs/"
    assert config.ignored_by("src/ui/__snapshots__/x.snap") == "*.snap"
    assert config.ignored_by("migrations/0001/init.sql") == "migrations/**"
    assert config.ignored_by("src/docs.py") is None
    assert config.sources == [".pr-review.toml"] and config.notes == []


def test_bad_keys_are_dropped_with_a_note_and_the_rest_applies() -> None:
    config = parse_config('min_severity = "blocker"\nmax_nits = -3\nfocus = "tests"\nyolo = true\n')
    assert config.focus == "tests"
    assert config.min_severity == "nit" and config.max_nits is None
    assert len(config.notes) == 3 and all("was ignored" in n for n in config.notes)
    assert any("`yolo`" in n for n in config.notes)


def test_broken_toml_means_defaults_and_a_note() -> None:
    config = parse_config("focus = [unclosed")
    settings = {"sources", "notes"}
    assert config.model_dump(exclude=settings) == RepoConfig().model_dump(exclude=settings)
    assert "not valid TOML" in config.notes[0]


def test_globs() -> None:
    assert glob_match("a/b/c.lock", "*.lock") and glob_match("Makefile", "Makefile")
    assert glob_match("pkg/Makefile", "Makefile") and not glob_match("pkg/Makefile.am", "Makefile")
    assert glob_match("gen/x/y.py", "gen/*") and not glob_match("src/gen/x.py", "gen/*")
    assert not glob_match("anything", "  ")
