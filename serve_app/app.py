"""Serve application builders: `serve_config.yaml` points here."""

from __future__ import annotations

from typing import Any, cast

from pydantic import BaseModel, ConfigDict
from ray.serve import Application, Deployment

from actors.agent import ReviewAgent
from actors.dispatcher import JobDispatcher
from serve_app.ingress import ReviewIngress


class ReviewAppArgs(BaseModel):
    """Arguments of the review application (serve_config.yaml `args:`)."""

    model_config = ConfigDict(extra="forbid")


DeploymentOptions = dict[str, dict[str, Any]]


def build_app(args: dict[str, Any] | None = None, deployment_options: DeploymentOptions | None = None) -> Application:
    """The review application. `serve deploy` applies serve_config.yaml's `deployments:` itself;
    `pr-review serve` passes the same entries as `deployment_options`."""
    ReviewAppArgs.model_validate(args or {})
    opts = deployment_options or {}
    # serve.deployment turns each class into a Deployment; mypy still sees the class.
    agent = cast(Deployment, ReviewAgent).options(**opts.get("ReviewAgent", {})).bind()
    dispatcher = cast(Deployment, JobDispatcher).options(**opts.get("JobDispatcher", {})).bind(agent)
    return cast(Deployment, ReviewIngress).options(**opts.get("ReviewIngress", {})).bind(dispatcher, agent)
