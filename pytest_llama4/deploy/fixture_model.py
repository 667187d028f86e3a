"""A tiny, offline "Llama 4"-shaped model directory that the Dynamo mocker can serve.

The mocker only needs a tokenizer and a config: it emits random token ids (roughly 1000-2000 and beyond),
so the vocabulary must cover tens of thousands of ids or the frontend detokenizes to nothing
(DESIGN.md, tokenizer pitfall). A word-level tokenizer over 32,000 pronounceable pseudo-words is
deterministic, small (about 700 kB) and built in well under a second, so it is built on first use and cached.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

VOCAB_SIZE = 32_000
SPECIAL_TOKENS = ["<|unk|>", "<|begin_of_text|>", "<|end_of_text|>", "<|header_start|>", "<|header_end|>", "<|eot|>"]
FORMAT_VERSION = "2"

# Llama 4's chat format (header tokens, <|eot|> after every turn), reduced to what a tokenizer needs.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|header_start|> {{ message['role'] }} <|header_end|> {{ message['content'] }} <|eot|> "
    "{% endfor %}{% if add_generation_prompt %}<|header_start|> assistant <|header_end|> {% endif %}"
)

_ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "n", "r", "s", "l", "t", "m"]


def _pseudo_words(count: int) -> list[str]:
    """Distinct words: two syllables can spell the same word two ways ("bas"+"ta", "ba"+"sta")."""
    syllables = ["".join(parts) for parts in itertools.product(_ONSETS, _VOWELS, _CODAS)]
    words = dict.fromkeys(syllables)
    for first, second in itertools.product(syllables, syllables):
        if len(words) >= count:
            break
        words.setdefault(first + second)
    return list(words)[:count]


def _tokenizer_json() -> dict:
    words = _pseudo_words(VOCAB_SIZE - len(SPECIAL_TOKENS))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + words)}
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, tok in enumerate(SPECIAL_TOKENS)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": False},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|unk|>"},
    }


def _config_json() -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "num_hidden_layers": 2,
        "max_position_embeddings": 8192,
        "bos_token_id": 1,
        "eos_token_id": 5,
        "torch_dtype": "bfloat16",
    }


def _tokenizer_config_json() -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot|>",
        "unk_token": "<|unk|>",
        "model_max_length": 8192,
        "chat_template": CHAT_TEMPLATE,
    }


def write_model_dir(target: Path) -> None:
    """Write the model files into an existing empty directory."""
    files = {
        "tokenizer.json": _tokenizer_json(),
        "config.json": _config_json(),
        "tokenizer_config.json": _tokenizer_config_json(),
        "generation_config.json": {"bos_token_id": 1, "eos_token_id": 5},
        "special_tokens_map.json": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot|>"},
    }
    for name, content in files.items():
        (target / name).write_text(json.dumps(content, indent=1))


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pytest-llama4"


def ensure_model_dir(cache_dir: Path | None = None) -> Path:
    """Return the cached tiny model directory, building it atomically on first use."""
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / f"tiny-llama4-v{FORMAT_VERSION}"
    if (target / "tokenizer.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-llama4-", dir=cache_dir))
    try:
        write_model_dir(staging)
        staging.rename(target)  # atomic; a concurrent builder that lost the race leaves ours behind
    except OSError:
        if not (target / "tokenizer.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
