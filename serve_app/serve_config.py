"""Reads serve_config.yaml, the one source of deployment settings, for local runs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "serve_config.yaml"


@dataclass(frozen=True)
class AppSpec:
    name: str
    route_prefix: str
    import_path: str
    args: dict[str, Any]
    deployments: dict[str, dict[str, Any]]

    def builder(self) -> Any:
        module, _, attr = self.import_path.partition(":")
        return getattr(importlib.import_module(module), attr)


def load_apps(path: Path = DEFAULT_PATH) -> dict[str, AppSpec]:
    config = yaml.safe_load(path.read_text())
    apps = {}
    for app in config["applications"]:
        deployments = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app.get("deployments", [])}
        apps[app["name"]] = AppSpec(app["name"], app.get("route_prefix", "/"), app["import_path"],
                                    app.get("args") or {}, deployments)
    return apps
