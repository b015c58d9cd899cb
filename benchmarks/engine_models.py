"""The Llama-shaped model and fine-tune the engine benchmarks serve, made on the spot.

The fine-tune moves every projection and norm of the base (embeddings and lm_head stay the
base's, as in the fine-tunes BitDelta is meant for), so its delta is the packed signs and
α of each projection plus the norms stored whole.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# ~134M parameters: hidden 768, 12 layers, MLP 2048, vocabulary 32000.
LLAMA_134M = {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 2048,
              "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 12,
              "max_position_embeddings": 512, "tie_word_embeddings": False}
# For CPU smoke runs of the benchmarks (numbers that mean nothing).
LLAMA_TINY = {**LLAMA_134M, "vocab_size": 256, "hidden_size": 64, "intermediate_size": 160,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}


def make_models(root: Path, shape: dict[str, object], dtype: torch.dtype = torch.float16
                ) -> tuple[Path, Path]:
    """A random base of `shape` in `dtype` and its fine-tune: (base dir, fine-tune dir)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    base, finetune = root / "base", root / "finetune"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**shape)).to(dtype).save_pretrained(base)
    finetune.mkdir()
    generator = torch.Generator().manual_seed(1)
    for path in base.iterdir():
        if path.suffix == ".safetensors":
            tensors = load_file(path)
            for name, t in tensors.items():
                if name.startswith("model.layers.") or name == "model.norm.weight":
                    scale = 0.01 * t.float().abs().mean()  # norms start at 1: std 0
                    noise = torch.randn(t.shape, generator=generator) * scale
                    tensors[name] = (t.float() + noise).to(t.dtype)
            save_file(tensors, finetune / path.name, metadata={"format": "pt"})
        else:
            (finetune / path.name).write_bytes(path.read_bytes())
    return base, finetune
