"""serve_config.yaml, the one source of deployment settings, and deploying it the way
`serve deploy` does (the dashboard's REST API), which is also what a KubeRay RayService does with
its serveConfigV2. `pr-review serve` deploys through here, so it runs exactly the operators' path."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "serve_config.yaml"
LLM_APP = "llm"
REVIEWS_APP = "reviews"

Config = dict[str, Any]
Overrides = dict[str, dict[str, Any]]  # deployment name -> options merged into its YAML entry


def load_config(path: Path = DEFAULT_PATH) -> Config:
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
        raise ValueError(f"{path} has no `applications:` list")
    return config


def app_args(config: Config, app: str) -> dict[str, Any]:
    """The `args:` of one application."""
    return next(dict(a.get("args") or {}) for a in config["applications"] if a["name"] == app)


def deployment_options(config: Config, app: str, deployment: str) -> dict[str, Any]:
    """The YAML's options of one deployment (empty when it lists none)."""
    for application in config["applications"]:
        if application["name"] == app:
            for entry in application.get("deployments") or []:
                if entry["name"] == deployment:
                    return {k: v for k, v in entry.items() if k != "name"}
    return {}


def local_config(config: Config, *, host: str, port: int, with_llm_app: bool,
                 overrides: Overrides | None = None) -> Config:
    """`config` for one machine: Serve on `host:port`, the `llm` app left out when the agents use
    an external endpoint, and deployment options overridden (tests shrink bounds this way)."""
    local = copy.deepcopy(config)
    local["http_options"] = {**local.get("http_options", {}), "host": host, "port": port}
    local["applications"] = [a for a in local["applications"] if with_llm_app or a["name"] != LLM_APP]
    for name, options in (overrides or {}).items():
        entries = [d for a in local["applications"] for d in a.get("deployments") or [] if d["name"] == name]
        if not entries:
            raise ValueError(f"serve_config.yaml has no deployment named {name!r}")
        for entry in entries:
            _merge(entry, options)
    return local


def _merge(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def deploy(dashboard_url: str, config: Config, *, connect_timeout_s: float = 60.0) -> None:
    """Submit `config` as `serve deploy` does; returns once Serve has accepted it (the apps then
    start in the background: wait for readiness separately)."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
    from ray.serve.schema import ServeDeploySchema

    body = ServeDeploySchema.model_validate(config).model_dump(exclude_unset=True)
    deadline = time.monotonic() + connect_timeout_s
    while True:
        try:  # the dashboard's Serve module comes up a little after ray.init returns
            client = ServeSubmissionClient(dashboard_url)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    client.deploy_applications(body)
