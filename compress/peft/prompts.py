"""Prompt tuning, p-tuning and prefix tuning: one tensor, `prompt_embeddings`.

Prompt and p-tuning save the virtual tokens' embeddings, [virtual tokens × transformer
submodules, token_dim] with token_dim the base's hidden size. Prefix tuning saves each
layer's key and value prefixes, [virtual tokens, layers·2·token_dim], where peft records
token_dim as the key/value width (head_dim × key-value heads: smaller than the hidden
size on a GQA model). The base's sizes come from its manifest: the embedding's width,
and the layers' k_proj.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from compress.peft.config import positive_int
from compress.tensorio import Manifest, TensorEntry

PROMPT_KEY = "prompt_embeddings"
_K_PROJ = re.compile(r"(?:^|\.)layers\.(\d+)\.self_attn\.k_proj\.weight$")
_EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")


def base_sizes(base: Manifest) -> dict[str, int]:
    """hidden, layers and kv_dim of the base, where its manifest names them."""
    sizes: dict[str, int] = {}
    layers: set[int] = set()
    for spec in base:
        if spec.name.endswith(_EMBEDDINGS) and len(spec.shape) == 2:
            sizes.setdefault("hidden", spec.shape[1])
        if (match := _K_PROJ.search(spec.name)) and len(spec.shape) == 2:
            layers.add(int(match[1]))
            sizes.setdefault("kv_dim", spec.shape[0])
    if layers:
        sizes["layers"] = len(layers)
    return sizes


def check_prompt(peft_type: str, raw: dict[str, Any], tensors: Mapping[str, TensorEntry],
                 base: Manifest, problems: list[str]) -> dict[str, Any]:
    """Check the one tensor against the config and the base; the record's options."""
    tokens = positive_int(raw, "num_virtual_tokens")
    token_dim = positive_int(raw, "token_dim")
    submodules = positive_int(raw, "num_transformer_submodules", 1)
    sizes = base_sizes(base)
    options: dict[str, Any] = {"num_virtual_tokens": tokens, "token_dim": token_dim}
    if peft_type == "PREFIX_TUNING":
        layers = positive_int(raw, "num_layers")
        options["num_layers"] = layers
        shape = (tokens, layers * 2 * token_dim)
        why = (f"virtual tokens={tokens}, num_layers={layers} x 2 (key, value) x "
               f"token_dim={token_dim}")
        _against(sizes, "layers", layers, "num_layers", "the base's layer count", problems)
        _against(sizes, "kv_dim", token_dim, "token_dim",
                 "the base's key/value width (head_dim x key-value heads)", problems)
    else:
        shape = (tokens * submodules, token_dim)
        why = (f"virtual tokens={tokens} x transformer submodules={submodules}, "
               f"token_dim={token_dim}")
        _against(sizes, "hidden", token_dim, "token_dim", "the base's hidden size", problems)
    entry = tensors.get(PROMPT_KEY)
    if entry is None:
        problems.append(f"{peft_type} adapter needs {PROMPT_KEY!r}")
    elif entry.shape != shape:
        problems.append(f"{PROMPT_KEY} is {list(entry.shape)}, expected {list(shape)} ({why})")
    unknown = sorted(set(tensors) - {PROMPT_KEY})
    if unknown:
        problems.append(f"unexpected tensors {unknown[:5]} for {peft_type} (peft saves only "
                        f"{PROMPT_KEY!r})")
    if "layers" not in sizes and "hidden" not in sizes:
        options["base_sizes_checked"] = False
    return options


def _against(sizes: dict[str, int], key: str, value: int, field: str, what: str,
             problems: list[str]) -> None:
    if key in sizes and sizes[key] != value:
        problems.append(f"{field} is {value} in adapter_config.json, but {what} is "
                        f"{sizes[key]}")
