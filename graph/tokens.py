"""Token counts from the served model's own tokenizer, so prompt packing fits its context exactly.

Only when the tokenizer cannot be had (an external endpoint's model, a model absent from this node)
does packing fall back to the character-based estimate, and it says so in the log.

Counters are picklable, so planning can count in a worker process (`graph.offload`): the
tokenizer travels as the path of a `tokenizer.json` that each process loads once.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from graph.context import estimate_tokens

log = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]


@lru_cache(maxsize=8)
def tokenizer_counter(model_source: str | None) -> TokenCounter:
    """A counter for `model_source` (a Hugging Face id or a model directory) from local files only (the
    directory, or the Hugging Face cache): never a download on an agent's start. Falls back to
    `estimate_tokens`, with a warning, when no tokenizer loads."""
    if not model_source:
        log.warning("no model named: prompt packing uses estimated token counts")
        return estimate_tokens
    if not _tokenizer_on_disk(model_source):  # spare a new replica transformers' slow import
        log.warning("no local tokenizer for %s: prompt packing uses estimated token counts", model_source)
        return estimate_tokens
    try:
        from transformers import AutoTokenizer
    except ImportError:
        log.warning("transformers is not installed: prompt packing uses estimated token counts")
        return estimate_tokens
    source = os.path.expanduser(model_source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:  # what transformers raises for missing or foreign files
        log.warning("no tokenizer for %s (%s): prompt packing uses estimated token counts",
                    model_source, _first_line(exc))
        return estimate_tokens
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a Python-only tokenizer: each process loads it as above
        return ModelTokenizer(source)
    # the Rust tokenizer directly (no Python-side special-token handling per call), saved as
    # transformers configured it, for worker processes to load
    directory = tempfile.mkdtemp(prefix="pr-review-tokenizer-")
    atexit.register(shutil.rmtree, directory, True)
    path = os.path.join(directory, "tokenizer.json")
    backend.save(path)
    with _lock:
        _tokenizers[path] = backend
    return TokenizerFile(path)


_tokenizers: dict[str, Any] = {}  # tokenizer.json path or model source -> loaded tokenizer, per process
_lock = threading.Lock()


def _loaded(key: str, load: Callable[[], Any]) -> Any:
    with _lock:
        found = _tokenizers.get(key)
    if found is None:
        found = load()
        with _lock:
            found = _tokenizers.setdefault(key, found)
    return found


@dataclass(frozen=True)
class TokenizerFile:
    """Counts tokens with the tokenizer saved at `path` (a `tokenizer.json`); pickled as the path."""

    path: str

    def __call__(self, text: str) -> int:
        from tokenizers import Tokenizer

        tokenizer = _loaded(self.path, lambda: Tokenizer.from_file(self.path))
        return len(tokenizer.encode(text, add_special_tokens=False).ids)


@dataclass(frozen=True)
class ModelTokenizer:
    """Counts tokens with transformers' tokenizer of `source` (local files only); pickled as the source."""

    source: str

    def __call__(self, text: str) -> int:
        from transformers import AutoTokenizer

        tokenizer = _loaded(self.source, lambda: AutoTokenizer.from_pretrained(self.source, local_files_only=True))
        return len(tokenizer.encode(text, add_special_tokens=False))


def _tokenizer_on_disk(model_source: str) -> bool:
    """Whether a tokenizer for `model_source` can load from local files: a model directory, or a
    Hugging Face id already in the local cache."""
    path = os.path.expanduser(model_source)
    if os.path.isdir(path):
        return True
    if model_source.count("/") != 1:
        return False
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(model_source, name), str)
               for name in ("tokenizer.json", "tokenizer_config.json"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def served_context_tokens(model_card: Mapping[str, Any]) -> int | None:
    """The context window an OpenAI-compatible `/v1/models` entry declares, if it declares one:
    Ray Serve LLM puts it in `metadata.max_request_context_length`, plain vLLM in `max_model_len`."""
    metadata = model_card.get("metadata") or {}
    for value in (metadata.get("max_request_context_length"), model_card.get("max_model_len")):
        if isinstance(value, int) and value > 0:
            return value
    return None
