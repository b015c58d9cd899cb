"""A tiny byte-level Llama (with a chat template), its fine-tunes' deltas and merged models,
the greedy reference every engine answer must equal, and an app behind a real uvicorn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compress.bitdelta import compress_bitdelta, merge_bitdelta
from tests.finetune import TOKENIZER_FILE, VOCAB_SIZE, byte_tokenizer_json
from tests.models import TINY_LLAMA, make_finetune
from tests.ports import serving_in_thread

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
TENANTS = 4


@dataclass(frozen=True)
class Tenant:
    name: str
    finetune: Path
    delta: Path
    merged: Path


@dataclass(frozen=True)
class EngineModels:
    base: Path
    tenants: list[Tenant]


def make_base(out: Path) -> Path:
    """The tests' tiny Llama over bytes, with a tokenizer and a chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**{**TINY_LLAMA, "vocab_size": VOCAB_SIZE,
                            "max_position_embeddings": 128, "eos_token_id": 10})
    LlamaForCausalLM(config).save_pretrained(out)
    (out / TOKENIZER_FILE).write_text(byte_tokenizer_json(), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE}))
    return out


def make_models(root: Path) -> EngineModels:
    """Four fine-tunes: each changes every tensor (so each has its own embeddings, norms and
    lm_head, stored whole), one compressed with one α per matrix instead of per row."""
    base = make_base(root / "base")
    tenants = []
    for i in range(TENANTS):
        finetune = make_finetune(base, root / f"ft{i}", seed=10 + i, rel_scale=0.2)
        delta = root / f"delta{i}"
        compress_bitdelta(base, finetune, delta, scale="tensor" if i == 3 else "row")
        merged = root / f"merged{i}"
        merge_bitdelta(base, delta, merged)
        tenants.append(Tenant(f"tenant-{i}", finetune, delta, merged))
    return EngineModels(base, tenants)


def greedy_reference(model_dir: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy tokens of a model as transformers runs it, a full forward pass per token."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(new_tokens):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


@contextmanager
def running(app: Any) -> Iterator[str]:
    """`app` behind a real uvicorn on loopback (its lifespan on); yields its URL."""
    with serving_in_thread(app, lifespan="on") as url:
        yield url
