"""Integration tests build their own settings: none may come from a running test stack's
environment (a GitHub App's id, another database)."""

from tests.stack import without_stack_environment  # noqa: F401  (an autouse fixture)
