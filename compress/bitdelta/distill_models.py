"""The two models of scale distillation, built one at a time by `build_model`.

The teacher is the fine-tune as it is; the student is the base with the delta's whole
tensors and a `BitDeltaLinear` (frozen base weight, packed signs, α the only Parameter)
per compressed Linear. See docs/codecs.md, "Scale distillation".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from compress.bitdelta.format import BitDeltaSummary
from compress.bitdelta.merge import read_compressed
from compress.errors import InvalidModel
from compress.modeling.model import build_model, causal_lm_config
from compress.tensorio import Checkpoint, describe_model
from kernels import Backend, bitdelta_linear_trainable


def _nothing(name: str) -> None:
    """The default `on_tensor`: nothing to do between tensors."""


class BitDeltaLinear(torch.nn.Module):
    """y = x·W_baseᵀ + α ⊙ (x·sign(ΔW)ᵀ) (+ bias), with α the one trainable tensor."""

    bits: torch.Tensor

    def __init__(self, weight: torch.Tensor, bits: torch.Tensor, scale: torch.Tensor,
                 bias: torch.Tensor | None, backend: Backend = "auto") -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach(),
                                                                 requires_grad=False)
        self.register_buffer("bits", bits)
        self.scale = torch.nn.Parameter(scale.detach().float().clone(), requires_grad=True)
        self.backend: Backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = bitdelta_linear_trainable(x, self.weight, self.bits, self.scale,
                                      backend=self.backend)
        return y if self.bias is None else y + self.bias


def build_teacher(finetune: Checkpoint, *, dtype: torch.dtype, device: torch.device,
                  on_tensor: Callable[[str], None] = _nothing) -> torch.nn.Module:
    """The fine-tune, frozen, in eval mode; `on_tensor(name)` before each tensor is read."""
    source = describe_model(finetune.source)

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        for name in finetune.manifest.names:
            on_tensor(name)
            yield name, finetune.finite_tensor(name)

    return build_model(causal_lm_config(finetune.config, source), tensors(), dtype=dtype,
                       device=device, source=source)


def build_student(base: Checkpoint, delta: Checkpoint, summary: BitDeltaSummary, *,
                  dtype: torch.dtype, device: torch.device, backend: Backend = "auto",
                  on_tensor: Callable[[str], None] = _nothing
                  ) -> tuple[torch.nn.Module, dict[str, BitDeltaLinear]]:
    """The compressed model with trainable α, and its BitDeltaLinears by module name;
    `on_tensor(name)` before each tensor is read."""
    source = describe_model(delta.source)
    # The delta carries the fine-tune's config.json (the architecture both share).
    config = causal_lm_config(delta.config or base.config, source)

    def tensors() -> Any:
        for name in base.manifest.names:
            on_tensor(name)
            stored = name in summary.full_tensors
            yield name, (delta if stored else base).finite_tensor(name)

    model = build_model(config, tensors(), dtype=dtype, device=device, source=source)
    layers: dict[str, BitDeltaLinear] = {}
    for module, spec in summary.compressed.items():
        linear = model.get_submodule(module)
        if not isinstance(linear, torch.nn.Linear):
            raise InvalidModel(
                f"{module!r} is a {type(linear).__name__} in this architecture, not a "
                "torch Linear; distillation replaces Linear layers only: leave it out of the "
                "targets when compressing")
        weight = read_compressed(delta, spec)  # zero padding bits, finite α
        layer = BitDeltaLinear(linear.weight, weight.bits.to(device), weight.scale.to(device),
                               linear.bias, backend)
        owner, _, leaf = module.rpartition(".")
        setattr(model.get_submodule(owner), leaf, layer)
        layers[module] = layer
    model.eval().requires_grad_(False)  # eval: no dropout, the logits are deterministic
    for layer in layers.values():
        layer.scale.requires_grad_(True)
    return model, layers
