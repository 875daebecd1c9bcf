"""The LLM app's profiles, model resolution, demo model and token counting, without an engine
(except the last test, which builds the Serve applications and so imports vLLM)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from graph.context import estimate_tokens
from graph.tokens import served_context_tokens, tokenizer_counter
from serve_app.llm_app import PROFILES, LLMAppArgs, build_llm_app, llm_config_kwargs
from serve_app.llm_models import DEFAULT_MODEL, ModelNotFound, build_tiny_model, demo_model, resolve_model
from serve_app.serve_config import LLM_APP, app_args, load_config

QWEN_7B = "Qwen/Qwen2.5-Coder-7B-Instruct"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, and no network to fill it from."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def put_in_cache(cache: Path, repo_id: str) -> Path:
    """The layout `huggingface_hub` leaves after a download: refs/main naming a snapshot directory."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")
    return snapshot


def test_gpu_profile_puts_one_gpu_replica_per_h100_and_autoscales_1_to_4(hf_cache: Path) -> None:
    kwargs = llm_config_kwargs(LLMAppArgs(profile="gpu", model=QWEN_7B))
    assert kwargs["model_loading_config"] == {"model_id": QWEN_7B, "model_source": QWEN_7B}
    assert kwargs["accelerator_type"] == "H100"
    assert kwargs["placement_group_config"] == {"bundle_per_worker": {"GPU": 1}}
    engine = kwargs["engine_kwargs"]
    assert engine["tensor_parallel_size"] == 1
    assert engine["structured_outputs_config"] == {"backend": "xgrammar", "disable_any_whitespace": True}
    deployment = kwargs["deployment_config"]
    assert deployment["max_ongoing_requests"] == 64 == engine["max_num_seqs"]
    scaling = deployment["autoscaling_config"]
    assert [scaling[k] for k in ("min_replicas", "max_replicas", "target_ongoing_requests")] == [1, 4, 16]
    assert "HF_HUB_OFFLINE" not in kwargs["runtime_env"]["env_vars"]  # GPU nodes download from the Hub


def test_cpu_profile_serves_llm_model_on_one_cpu_with_a_small_kv_cache(
        hf_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    monkeypatch.setenv("LLM_MODEL", str(model_dir))
    kwargs = llm_config_kwargs(LLMAppArgs.model_validate(app_args(load_config(), LLM_APP)))
    # Served under exactly the id the agents send: LLM_MODEL as given.
    assert kwargs["model_loading_config"] == {"model_id": str(model_dir), "model_source": str(model_dir)}
    assert kwargs["accelerator_type"] is None
    assert kwargs["placement_group_config"] == {"bundles": [{"CPU": 1}]}
    engine = kwargs["engine_kwargs"]
    assert engine["enforce_eager"] is True and engine["dtype"] == "bfloat16"
    assert engine["max_model_len"] == PROFILES["cpu"].max_model_len
    assert kwargs["runtime_env"]["env_vars"] == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    deployment = kwargs["deployment_config"]
    assert deployment["name"] == "my-model"
    scaling = deployment["autoscaling_config"]
    assert scaling["min_replicas"] == scaling["max_replicas"] == 1
    assert scaling["target_ongoing_requests"] > 0 and deployment["max_ongoing_requests"] > 0


def test_cpu_profile_loads_a_cached_hub_model_without_the_network(hf_cache: Path) -> None:
    put_in_cache(hf_cache, DEFAULT_MODEL)
    kwargs = llm_config_kwargs(LLMAppArgs(profile="cpu", model=DEFAULT_MODEL))
    assert kwargs["model_loading_config"]["model_id"] == DEFAULT_MODEL
    assert kwargs["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"


def test_args_override_the_profile_and_are_validated(hf_cache: Path) -> None:
    args = LLMAppArgs(profile="gpu", model=QWEN_7B, accelerator_type="H200", tensor_parallel_size=2,
                      max_replicas=8)
    kwargs = llm_config_kwargs(args)
    assert kwargs["accelerator_type"] == "H200"
    assert kwargs["engine_kwargs"]["tensor_parallel_size"] == 2
    assert kwargs["deployment_config"]["autoscaling_config"]["max_replicas"] == 8
    assert PROFILES["gpu"].autoscaling.max_replicas == 4  # the profile itself is untouched
    with pytest.raises(ValidationError):
        LLMAppArgs(profile="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        LLMAppArgs(profile="gpu", replicas=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        LLMAppArgs(profile="gpu", min_replicas=5, max_replicas=2).resolved_profile()


def test_llm_model_is_a_hub_id_or_an_existing_directory(tmp_path: Path) -> None:
    assert resolve_model(QWEN_7B).source == QWEN_7B
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve_model(f"{tmp_path}/m/").source == str((tmp_path / "m").resolve())
    with pytest.raises(ModelNotFound, match="no such model directory"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelNotFound, match="neither"):
        resolve_model("not a model id")
    # A cluster's head node need not see the workers' model volume.
    assert resolve_model("/models/qwen", must_exist=False).source == "/models/qwen"


def test_demo_offline_falls_back_to_the_tiny_model_and_says_so(hf_cache: Path, tmp_path: Path) -> None:
    chosen = demo_model(tmp_path / "home")
    assert chosen.meaningless
    assert "meaningless" in chosen.label and DEFAULT_MODEL in chosen.label
    assert (Path(chosen.source) / "config.json").is_file()
    assert resolve_model(chosen.source).source == chosen.source


def test_demo_uses_the_default_model_when_it_is_cached(hf_cache: Path, tmp_path: Path) -> None:
    put_in_cache(hf_cache, DEFAULT_MODEL)
    chosen = demo_model(tmp_path / "home")
    assert (chosen.source, chosen.meaningless) == (DEFAULT_MODEL, False)
    assert not (tmp_path / "home" / "models").exists()


def test_tiny_model_is_a_loadable_llama_with_a_chat_template(tiny_model: Path) -> None:
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["head_dim"] >= 64  # vLLM's CPU attention rejects smaller heads
    assert "chat_template" in (tiny_model / "tokenizer_config.json").read_text() or (
        tiny_model / "chat_template.jinja").is_file()
    weights = next(tiny_model.glob("*.safetensors"))
    mtime = weights.stat().st_mtime_ns
    assert build_tiny_model(tiny_model) == tiny_model and weights.stat().st_mtime_ns == mtime


def test_building_the_tiny_model_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # The offline `pr-review demo` builds it: its terminal shows the CLI's lines only.
    build_tiny_model(tmp_path / "tiny")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_token_counts_come_from_the_models_tokenizer(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    text = 'def handler(request):\n    data = eval(request.body)\n    return {"ok": data}\n'
    expected = len(AutoTokenizer.from_pretrained(tiny_model).encode(text, add_special_tokens=False))
    count = tokenizer_counter(str(tiny_model))
    assert count is not estimate_tokens and count(text) == expected


def test_token_counts_fall_back_to_the_estimate_with_a_warning(hf_cache: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="graph.tokens"):
        count = tokenizer_counter("acme/not-cached-anywhere")
    assert count is estimate_tokens
    assert "estimated token counts" in caplog.text


def test_served_context_window_is_read_from_either_models_shape() -> None:
    assert served_context_tokens({"id": "m", "metadata": {"max_request_context_length": 4096}}) == 4096
    assert served_context_tokens({"id": "m", "max_model_len": 32768}) == 32768
    assert served_context_tokens({"id": "gpt-x"}) is None


@pytest.mark.vllm
def test_both_profiles_build_an_openai_app(hf_cache: Path, tiny_model: Path) -> None:
    import ray
    from ray.serve.deployment import Application

    ray_was_running = ray.is_initialized()
    try:
        assert isinstance(build_llm_app({"profile": "cpu", "model": str(tiny_model)}), Application)
        assert isinstance(build_llm_app({"profile": "gpu", "model": QWEN_7B}), Application)
    finally:
        if not ray_was_running:  # building reads Ray's runtime context, which starts a local Ray
            ray.shutdown()
