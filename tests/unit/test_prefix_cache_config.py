"""Prefix caching, as configured: a review's group prompts share everything before their diff, both
model profiles cache prefixes, and the GPU profile routes a review's calls to where its prefix is
(Ray Serve LLM's prefix-aware router). Measured in bench/prefix_cache.py; the engine is in tests/vllm."""

from __future__ import annotations

from graph.prompts import group_prompt, guidance, other_changes, scope_note, template
from serve_app.llm_app import PROFILES, LLMAppArgs, llm_config_kwargs

PR = {"title": "Retry webhook deliveries", "body": "Moves delivery to a worker.\n" * 20,
      "commit_messages": ["Add the outbox", "Send from a worker"]}
CONTEXT = {"guidance": guidance("security", "tests", "Prefer small functions."),
           "other_changes": other_changes([{"path": "logo.png", "reason": "binary file"}]),
           "scope_note": scope_note(None)}


def test_a_reviews_group_prompts_are_byte_identical_up_to_their_diff() -> None:
    diffs = ['<pr_file path="a.py">\nR1    + | x = 1\n</pr_file>', '<pr_file path="b.py">\nR9    + | y = 2\n</pr_file>']
    prompts = [group_prompt("acme/shop", 7, PR, CONTEXT, diff, 30) for diff in diffs]
    prefixes = {p[:p.index(d)] for p, d in zip(prompts, diffs, strict=True)}
    assert len(prefixes) == 1
    [prefix] = prefixes
    assert all(p[len(prefix):].rstrip("\n") == d for p, d in zip(prompts, diffs, strict=True))  # the diff is last
    # Everything the groups share comes before the diff: the PR's text and the instructions.
    assert "Moves delivery to a worker." in prefix and "Prefer small functions." in prefix
    assert "Return at most 30 findings" in prefix and "logo.png" in prefix


def test_the_instructions_come_before_anything_of_the_pr() -> None:
    """What every review sends is the start of every group prompt, so reviews share it too."""
    one = group_prompt("acme/shop", 7, PR, CONTEXT, "DIFF", 30)
    other = group_prompt("other/repo", 1, {"title": "x", "body": "", "commit_messages": []}, {}, "DIFF", 30)
    static = template("group_review").split("{", 1)[0]
    assert len(static) > 200 and one.startswith(static) and other.startswith(static)


def test_both_profiles_cache_prefixes() -> None:
    for profile in PROFILES.values():
        assert profile.engine_kwargs["enable_prefix_caching"] is True


def test_the_gpu_profile_routes_by_prefix_and_still_balances_load() -> None:
    deployment = llm_config_kwargs(LLMAppArgs(profile="gpu", model="Qwen/Qwen2.5-Coder-7B-Instruct"))[
        "deployment_config"]
    router = deployment["request_router_config"]
    assert router["request_router_class"] == "ray.serve.llm.request_router.PrefixCacheAffinityRouter"
    kwargs = router["request_router_kwargs"]
    # Affinity gives way to load once one replica carries a whole autoscaling target more than another.
    assert kwargs["imbalanced_threshold"] == deployment["autoscaling_config"]["target_ongoing_requests"]
    assert kwargs["do_eviction"] and kwargs["eviction_target_chars"] < kwargs["eviction_threshold_chars"]
    assert PROFILES["gpu"].request_router is not router  # a copy: the profile is never mutated


def test_the_cpu_profile_keeps_serves_default_router() -> None:
    args = LLMAppArgs(profile="cpu", model="Qwen/Qwen2.5-Coder-0.5B-Instruct")
    assert "request_router_config" not in llm_config_kwargs(args)["deployment_config"]  # one replica
