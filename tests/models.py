"""Tiny models for tests, built on the spot: no downloads.

The tiny Llama has deliberately awkward sizes (48 and 120 are not multiples of 32) so
that every codec and kernel meets padding and masking.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TINY_LLAMA = {
    "vocab_size": 96,
    "hidden_size": 48,
    "intermediate_size": 120,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
}


def make_tiny_llama(out: Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Save a randomly initialised tiny LlamaForCausalLM with `save_pretrained`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).to(dtype)
    model.save_pretrained(out)
    return out


def make_finetune(base: Path, out: Path, seed: int = 1, rel_scale: float = 0.05,
                  rank: int = 4) -> Path:
    """A "fine-tune" of `base`: every weight moves by a low-rank part plus small noise.

    Real fine-tune deltas are small next to the weights, with a decaying spectrum;
    a low-rank term plus dense noise gives both properties.
    """
    generator = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    for src in base.iterdir():
        if src.suffix == ".safetensors":
            tensors = load_file(src)
            tuned = {name: _perturb(t, generator, rel_scale, rank) for name, t in tensors.items()}
            save_file(tuned, out / src.name, metadata={"format": "pt"})
        elif src.is_file():
            (out / src.name).write_bytes(src.read_bytes())
    return out


def _perturb(t: torch.Tensor, generator: torch.Generator, rel_scale: float, rank: int
             ) -> torch.Tensor:
    w = t.float()
    scale = rel_scale * float(w.abs().mean())
    delta = torch.randn(w.shape, generator=generator) * scale * 0.3
    if w.dim() == 2:
        r = min(rank, *w.shape)
        left = torch.randn(w.shape[0], r, generator=generator)
        right = torch.randn(r, w.shape[1], generator=generator)
        delta += (left @ right) * scale / r**0.5
    return (w + delta).to(t.dtype)


BNB_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_bnb4bit(base: Path, out: Path, quant_type: str = "nf4", double_quant: bool = True,
                 blocksize: int = 64) -> Path:
    """`base` quantized as transformers saves a bitsandbytes 4-bit model: each Linear
    weight of the decoder layers as packed nibbles with the aux tensors of
    `QuantState.as_dict(packed=True)`, and `quantization_config` in config.json.

    Made with bitsandbytes' own quantizer (on the CPU) rather than `from_pretrained`, so
    the quant type, double quant and block size are the caller's to pick.
    """
    import json

    import bitsandbytes.functional as bnb

    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    dtype = torch.float32
    for src in sorted(base.glob("*.safetensors")):
        for name, t in load_file(src).items():
            dtype = t.dtype
            if t.dim() == 2 and name.rsplit(".", 2)[-2] in BNB_TARGETS:
                packed, state = bnb.quantize_4bit(t, blocksize=blocksize, quant_type=quant_type,
                                                  compress_statistics=double_quant)
                tensors[name] = packed
                for key, value in state.as_dict(packed=True).items():
                    tensors[f"{name}.{key}"] = value
            else:
                tensors[name] = t
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
        "bnb_4bit_quant_type": quant_type, "bnb_4bit_use_double_quant": double_quant,
        "bnb_4bit_compute_dtype": str(dtype).removeprefix("torch."),
        "bnb_4bit_quant_storage": "uint8"}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
