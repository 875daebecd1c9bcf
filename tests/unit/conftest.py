"""Unit tests see the environment a user's shell would have, not the one a running test stack
put into this process (the stacks stay up between tests to save their start-up time)."""

from tests.stack import without_stack_environment  # noqa: F401  (an autouse fixture)
