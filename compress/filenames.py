"""Which files make up a model, a LoRA adapter and a BitDelta delta: their names only.

The one definition of each format's file set. The server accepts uploads by it
(registry/uploads/rules.py) and `deltahub push` chooses what to send by it. It imports
nothing but the standard library, because the client is installed without torch
(`pip install deltahub`) and the format modules that re-export these names need torch.
"""

from __future__ import annotations

import re

CONFIG_FILE = "config.json"  # what `transformers` needs to load the weights
MODEL_CARD = "README.md"  # a model's (or an adapter's) card, as the Hugging Face Hub shows it
# The files of a model: safetensors weights, JSON (config.json, the shard index, tokenizer
# files), a sentencepiece tokenizer.model, and text (merges.txt, README.md).
MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".md")

# What a Hugging Face tokenizer's `save_pretrained` writes (fast and slow tokenizers).
TOKENIZER_FILES = frozenset({
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt"})

# A PEFT LoRA adapter, as `peft.save_pretrained` writes it.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, MODEL_CARD)

# A BitDelta delta (docs/codecs.md describes each file).
DELTA_STEM = "delta"
DELTA_FILE = "delta.safetensors"
DELTA_INDEX = "delta.safetensors.index.json"
REPORT_FILE = "report.json"
# Pictures a codec draws (LoRA's spectra.png): adapters of either kind keep them, with
# the codec's report.json, beside the format's own files.
PICTURE_SUFFIX = ".png"

_DELTA_SHARD = re.compile(rf"{DELTA_STEM}(-\d{{5}}-of-\d{{5}})?\.safetensors")
_DELTA_OTHER_FILES = frozenset({DELTA_INDEX, CONFIG_FILE, REPORT_FILE, MODEL_CARD})


def is_model_file(name: str) -> bool:
    """Whether `name` is one of a model's files (not trainer state, a pickle or a dotfile)."""
    return not name.startswith(".") and name.endswith(MODEL_FILE_SUFFIXES)


def is_tokenizer_file(name: str) -> bool:
    """Whether `name` is one of the tokenizer files `save_pretrained` writes: a finalized
    model may still gain these, since they change no weight."""
    return name in TOKENIZER_FILES


def is_adapter_file(name: str) -> bool:
    """Whether `name` is one of a LoRA adapter's files (`ADAPTER_FILES`)."""
    return name in ADAPTER_FILES


def is_report_file(name: str) -> bool:
    """Whether `name` is a codec's report or picture, which any adapter may carry."""
    return name == REPORT_FILE or (name.endswith(PICTURE_SUFFIX) and not name.startswith("."))


def is_delta_file(name: str) -> bool:
    """Whether `name` is one of a delta's files (docs/codecs.md describes them)."""
    return name in _DELTA_OTHER_FILES or _DELTA_SHARD.fullmatch(name) is not None
