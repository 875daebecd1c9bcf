"""Capacity comes from one source: serve_config.yaml. No deployment decorator, no setting, no global
cap may hold a second copy of the numbers that bound the agent pool and the model."""

from __future__ import annotations

from typing import Any

from ray.serve import Deployment

from actors.agent import ReviewAgent
from actors.dispatcher import JobDispatcher, pool_bound
from actors.llm_gate import global_slots
from graph.context import estimate_tokens
from graph.plan import Budget, pack
from prreview.config import Settings
from serve_app.ingress import ReviewIngress
from serve_app.llm_app import PROFILES
from serve_app.serve_config import REVIEWS_APP, deployment_options, load_config
from tests.unit.test_plan import _module

DEPLOYMENTS: dict[str, Any] = {"ReviewAgent": ReviewAgent, "JobDispatcher": JobDispatcher,
                               "ReviewIngress": ReviewIngress}


def _agent() -> dict[str, Any]:
    return deployment_options(load_config(), REVIEWS_APP, "ReviewAgent")


def test_deployment_decorators_name_their_deployment_and_set_nothing_else() -> None:
    for name, deployment in DEPLOYMENTS.items():
        assert isinstance(deployment, Deployment)
        assert deployment.name == name
        # Anything passed to @serve.deployment (max_ongoing_requests, max_queued_requests, num_replicas,
        # autoscaling_config, ray_actor_options, ...) is recorded as a user-configured option.
        assert deployment._deployment_config.user_configured_option_names == {"name"}, name


def test_every_deployment_is_sized_in_serve_config_yaml() -> None:
    config = load_config()
    for name in DEPLOYMENTS:
        options = deployment_options(config, REVIEWS_APP, name)
        assert "max_ongoing_requests" in options, name
        assert "num_replicas" in options or "autoscaling_config" in options, name
        assert "ray_actor_options" in options, name


def test_the_settings_hold_no_agent_capacity() -> None:
    forbidden = ("ongoing", "replica", "capacity", "dispatch", "agent", "autoscal", "max_queued_requests")
    names = set(Settings.model_fields)
    assert not {n for n in names if any(word in n for word in forbidden)}, names


def test_queued_dispatches_can_drive_the_agent_autoscaler_to_its_maximum() -> None:
    agent = _agent()
    scaling = agent["autoscaling_config"]
    queued = agent.get("max_queued_requests", -1)
    assert queued != -1, "unbounded: the dispatcher would hand Serve every queued job"
    # The dispatcher stops at Serve's bound (max_ongoing x replicas + max_queued); the queued calls
    # are what the autoscaler scales on, so they must be able to ask for max_replicas.
    assert queued >= scaling["target_ongoing_requests"] * scaling["max_replicas"], agent
    assert agent["max_ongoing_requests"] >= scaling["target_ongoing_requests"], agent


def test_the_global_llm_cap_applies_to_an_external_endpoint_only() -> None:
    assert global_slots(Settings(llm_base_url=None)) is None  # Serve bounds the in-cluster app
    external = Settings(llm_base_url="https://llm.example/v1", llm_global_concurrency=7)
    assert global_slots(external) == 7


def groups_a_review_sends_at_once(settings: Settings) -> int:
    """graph/plan.py packs a PR into at most `Budget.max_groups` groups, all reviewed in parallel
    (LangGraph Send, graph/nodes.py `fan_out`); graph/compute.py sets `max_groups` to the job's LLM
    call budget minus the two it keeps (summary, a retry)."""
    return settings.job_max_llm_calls - 2


def test_the_planner_reaches_its_group_bound_on_a_big_pr() -> None:
    files = [_module(i, lines=20) for i in range(40)]
    plan = pack(files, Budget(group_tokens=300, max_groups=12, call_tokens=100), estimate_tokens)
    assert len(plan.groups) == 12  # as many parallel calls as the budget allows, the rest skipped
    assert plan.skipped


def test_the_agent_pool_can_drive_every_llm_profile_to_its_maximum() -> None:
    agent = _agent()
    settings = Settings(llm_base_url=None)
    assert global_slots(settings) is None  # in-cluster model: no pr-review cap in front of it
    pool_calls = (agent["autoscaling_config"]["max_replicas"] * agent["max_ongoing_requests"]
                  * groups_a_review_sends_at_once(settings))
    for name, profile in PROFILES.items():
        scaling = profile.autoscaling
        # A replica accepts more than its target, so queued work is visible to the autoscaler
        # before the replica refuses anything.
        assert profile.max_ongoing_requests > scaling.target_ongoing_requests, name
        # Big PRs (many groups each) can ask for more than every replica's target: the model app is
        # never pinned below max_replicas by the agents. Reviews of one group each send at most
        # max_replicas x max_ongoing_requests = 16 calls at once, which is one gpu replica's target:
        # a pool of small reviews needs no second model replica, by design.
        assert pool_calls > scaling.target_ongoing_requests * scaling.max_replicas, name


def test_the_dispatchers_bound_is_serves_ongoing_per_running_replica_plus_its_queue() -> None:
    def details(replicas: list[str], queued: int = 8) -> dict[str, Any]:
        return {"applications": {"reviews": {"deployments": {"ReviewAgent": {
            "deployment_config": {"max_ongoing_requests": 4, "max_queued_requests": queued},
            "replicas": [{"state": s} for s in replicas]}}}}}

    assert pool_bound(details(["RUNNING"]), "reviews", "ReviewAgent") == 12
    assert pool_bound(details(["RUNNING", "RUNNING", "STARTING", "STOPPING"]), "reviews", "ReviewAgent") == 16
    assert pool_bound(details([]), "reviews", "ReviewAgent") == 8  # queued calls are what scale it up
    assert pool_bound(details(["RUNNING"], queued=-1), "reviews", "ReviewAgent") is None  # unbounded
    assert pool_bound(details(["RUNNING"]), "reviews", "Other") is None
    assert pool_bound({}, "reviews", "ReviewAgent") is None
