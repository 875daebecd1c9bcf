"""A stack configured as a team exposing pr-review runs it: an operator key, a webhook secret, and a
GitHub App (its key made here; the fake GitHub knows its public half and its installation)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

OPERATOR = ("ops", "operator-secret-0123456789")
WEBHOOK_SECRET = "webhook-secret-abcdef"
APP_ID = 4242
INSTALLATION = 777
INSTALLED_REPOS = [("acme", "shop"), ("acme", "payments")]


@functools.cache
def app_key() -> tuple[str, str]:
    """(private PEM, public PEM) of the test App, made once per test session."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def secure_env() -> dict[str, str]:
    return {"PR_REVIEW_API_KEYS": f"{OPERATOR[0]}:{OPERATOR[1]}", "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GITHUB_APP_ID": str(APP_ID), "GITHUB_APP_PRIVATE_KEY": app_key()[0]}


def secure_stack(stacks: Any) -> Any:
    """The running secure stack, with the App installed on the fake GitHub and fakes reset."""
    stack = stacks.get(secure_env())
    stack.llm.reset()
    stack.github.install_app(APP_ID, app_key()[1], installations={INSTALLATION: INSTALLED_REPOS})
    return stack


def pr_review_cli(stack: Any, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`pr-review ARGS` as an operator runs it beside the service (same DATABASE_URL), with `env` added."""
    return subprocess.run([sys.executable, "-m", "serve_app.cli", *args], env={**os.environ, **stack.env, **env},
                          capture_output=True, text=True, timeout=120)


def make_key(stack: Any, name: str, *options: str) -> str:
    made = pr_review_cli(stack, "keys", "create", name, *options)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()
