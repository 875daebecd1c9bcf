"""Which weights the in-cluster vLLM app serves: a Hugging Face id, a local directory, or the tiny
test model built on the spot (no download).

`LLM_MODEL` is served under exactly the id it was given, as `vllm serve X` serves `X`: the agents
send the same `LLM_MODEL` as their chat requests' `model`, so the two can never disagree.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from prreview.errors import PRReviewError

log = logging.getLogger(__name__)

# Small enough for a laptop CPU, trained for code review-ish instructions.
DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
TINY_MODEL_DIRNAME = "tiny-random-llama"
TINY_MODEL_SEED = 0
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Files vLLM needs to load a Hugging Face checkpoint (no PyTorch .bin duplicates, no ONNX/GGUF).
_HF_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]

# The tiny model speaks through this template; vLLM's chat endpoint refuses a tokenizer without one.
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_SPECIAL_TOKENS = ["<|endoftext|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


class ModelNotFound(PRReviewError):
    code = "model_not_found"


@dataclass(frozen=True)
class ModelSpec:
    """`model_id`: the name clients send; `source`: what vLLM loads (Hugging Face id or absolute dir)."""

    model_id: str
    source: str

    @property
    def is_local(self) -> bool:
        return os.path.isabs(self.source)


def resolve_model(name: str, *, must_exist: bool = True) -> ModelSpec:
    """`LLM_MODEL` -> what to serve. A name that looks like a path names a model directory (checked
    here unless `must_exist` is False: a cluster's head node may not mount the workers' volume);
    anything else must look like a Hugging Face id (`org/name`), fetched by vLLM where it runs."""
    name = name.strip()
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is a directory but holds no config.json: not a Hugging Face model.")
        return ModelSpec(model_id=name, source=str(path.resolve()))
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        if must_exist or not path.is_absolute():
            raise ModelNotFound(f"LLM_MODEL={name!r} looks like a path, but no such model directory exists.")
        return ModelSpec(model_id=name, source=str(path))
    if not _HF_ID.match(name):
        raise ModelNotFound(f"LLM_MODEL={name!r} is neither a model directory nor a Hugging Face id "
                            "(org/name).")
    return ModelSpec(model_id=name, source=name)


def cached_snapshot(repo_id: str) -> Path | None:
    """The complete local copy of `repo_id` in the Hugging Face cache, without touching the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, allow_patterns=_HF_PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    has_weights = any(path.glob("*.safetensors"))
    return path if has_weights and (path / "config.json").is_file() else None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One quick request, so that an offline machine answers in seconds, not after the hub client's
    minute of retries."""
    if _hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        httpx.head(endpoint, timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return True


def download_model(repo_id: str, *, timeout_s: float = 10.0) -> Path | None:
    """Fetch `repo_id` from the Hugging Face Hub; None when offline or unreachable (said in the log)."""
    if not hub_reachable():
        log.warning("the Hugging Face Hub is unreachable: %s is not downloaded", repo_id)
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HF_PATTERNS, etag_timeout=timeout_s))
    except Exception as exc:  # the hub client raises many kinds (HTTP, connection, timeout, auth)
        log.warning("could not download %s from the Hugging Face Hub: %s", repo_id, exc)
        return None


class DemoModel(NamedTuple):
    source: str
    label: str
    meaningless: bool


def demo_model(home: Path, *, allow_download: bool = True) -> DemoModel:
    """The demo's model: DEFAULT_MODEL from the local cache (or the Hub, when reachable), else the
    tiny test model, labelled as such so that nobody mistakes its text for a review."""
    short = DEFAULT_MODEL.split("/")[-1]
    if cached_snapshot(DEFAULT_MODEL) is not None:
        return DemoModel(DEFAULT_MODEL, f"{short} (from the local Hugging Face cache)", False)
    if allow_download and download_model(DEFAULT_MODEL) is not None:
        return DemoModel(DEFAULT_MODEL, f"{short} (downloaded from the Hugging Face Hub)", False)
    tiny = build_tiny_model(home / "models" / TINY_MODEL_DIRNAME)
    label = (f"{short} could not be obtained (offline?), so this demo runs a tiny TEST model with random "
             "weights: the pipeline is real, but the model's findings and summary are meaningless text. "
             f"Put {DEFAULT_MODEL} in the Hugging Face cache, or set LLM_MODEL, for real reviews.")
    return DemoModel(str(tiny), label, True)


def _tokenizer_corpus() -> str:
    """About 60 KB of Python from the standard library (json, textwrap): enough for a toy BPE."""
    import json
    import textwrap

    sources = [Path(json.__file__).parent / name for name in ("encoder.py", "decoder.py", "__init__.py")]
    sources.append(Path(textwrap.__file__))
    return "\n".join(path.read_text(encoding="utf-8") for path in sources)


# The tiny model's only "skill": a preference for which character class follows which. A token scores
# by the mean preference along its characters, starting from the last character of the token it
# reads. Under JSON-schema guidance that makes it write one short word per string, one digit per
# number and one item per array, so its answers always close well within max_tokens (with
# purely random weights, integers and strings run on until max_tokens cuts them off).
_CHAR_CLASSES = ('"', "letter", "digit", "[", "{", "}", "]", ":", ",", "other")
_PREFERENCES: dict[str, dict[str, float]] = {
    '"': {"letter": 3, "digit": 1, ",": 1, "}": 1, ":": 1, "other": 1},  # a word after an opening quote
    "letter": {'"': 3, "letter": 2, "digit": 1, "other": 1},  # then close the string
    "digit": {",": 3, '"': 2.5, "}": 2},  # one-digit numbers
    "[": {"{": 3, "]": 1},  # one finding...
    "}": {"]": 3, "}": 3, ",": 1},  # ...and no more
    "]": {"}": 3, ",": 1},
    "{": {'"': 3},
    ":": {"digit": 3, '"': 2, "letter": 1},  # numbers and strings rather than null
    ",": {'"': 3, "{": 2},
    "other": {'"': 2, "letter": 1},
}


def _char_class(char: str) -> int:
    if char.isalpha() or char == "_":
        return _CHAR_CLASSES.index("letter")
    if char.isdigit():
        return _CHAR_CLASSES.index("digit")
    return _CHAR_CLASSES.index(char) if char in _CHAR_CLASSES else _CHAR_CLASSES.index("other")


def _set_preferences(model: Any, tokenizer: Any, generator: Any) -> None:
    """Embeddings say which class a token ends with (plus a little noise, so words vary with context);
    the output layer scores each token by the class it starts with. The transformer layers keep their
    small random weights."""
    import torch

    texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    hidden, classes = model.config.hidden_size, len(_CHAR_CLASSES)
    embed = torch.randn(len(texts), hidden, generator=generator) * 0.1
    head = torch.randn(len(texts), hidden, generator=generator) * 0.1
    embed[:, :classes] = 0.0
    head[:, :classes] = 0.0
    for token, text in enumerate(texts):
        if not text or text in _SPECIAL_TOKENS:
            continue
        chars = [_CHAR_CLASSES[_char_class(char)] for char in text]
        embed[token, _CHAR_CLASSES.index(chars[-1])] = 1.0
        inner = sum(_PREFERENCES[a].get(b, 0.0) for a, b in zip(chars, chars[1:], strict=False))
        for reading, scores in _PREFERENCES.items():
            head[token, _CHAR_CLASSES.index(reading)] = (scores.get(chars[0], 0.0) + inner) / len(chars)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(embed)
        model.get_output_embeddings().weight.copy_(head)


def build_tiny_model(directory: Path, *, vocab_size: int = 1024, seed: int = TINY_MODEL_SEED) -> Path:
    """A ~1 MB Llama and byte-level BPE tokenizer, written in seconds: its text is meaningless, but vLLM
    loads it like any checkpoint, so tests and the offline demo run the real engine.

    vLLM's CPU attention needs head_dim >= 64 (head_dim 16 is rejected). Idempotent: a model already in
    `directory` is reused.
    """
    directory = Path(directory)
    if (directory / "config.json").is_file() and any(directory.glob("*.safetensors")):
        return directory.resolve()
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as transformers_logging

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([_tokenizer_corpus()], vocab_size=vocab_size, min_frequency=2,
                            special_tokens=_SPECIAL_TOKENS, show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|end|>",
                                        pad_token="<|endoftext|>", unk_token=None)
    tokenizer.chat_template = _CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    _set_preferences(model, tokenizer, torch.Generator().manual_seed(seed))
    model = model.to(torch.bfloat16)  # type: ignore[arg-type]  # transformers wraps .to; mypy misreads it
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    bar_was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # "Writing model shards" on the demo's terminal is noise
    try:
        model.save_pretrained(directory, safe_serialization=True)
    finally:
        if bar_was_on:
            transformers_logging.enable_progress_bar()
    return directory.resolve()
