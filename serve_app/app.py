"""The review application's builder: `serve_config.yaml` points here.

`serve deploy serve_config.yaml` (and a KubeRay RayService, and `pr-review serve`, which deploys
the same file the same way) calls it with the application's `args:` dict, then applies the YAML's
`deployments:` options itself: replica counts, `max_ongoing_requests`, `max_queued_requests` and
autoscaling live in serve_config.yaml only, never in code.
"""

from __future__ import annotations

from typing import Any, cast

from pydantic import BaseModel, ConfigDict
from ray.serve import Application, Deployment

from actors.agent import ReviewAgent
from actors.dispatcher import JobDispatcher
from serve_app.ingress import ReviewIngress


class ReviewAppArgs(BaseModel):
    """Arguments of the review application (serve_config.yaml `args:`); none today, and an
    unknown one is refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")


def build_app(args: dict[str, Any]) -> Application:
    """The review application: the ingress, one dispatcher, and the agent pool it calls."""
    ReviewAppArgs.model_validate(args or {})
    # serve.deployment turns each class into a Deployment; mypy still sees the class.
    agent = cast(Deployment, ReviewAgent).bind()
    dispatcher = cast(Deployment, JobDispatcher).bind(agent)
    # The ingress calls neither per request; the dispatcher is bound to it so that Serve deploys
    # the dispatcher as part of this application (the agents come with the dispatcher).
    return cast(Deployment, ReviewIngress).bind(dispatcher)
