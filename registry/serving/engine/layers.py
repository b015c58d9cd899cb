"""Tenant-aware layers: the base's tensors once, each resident tenant's own parts beside them.

Rows of a batch are grouped by tenant slot (`Layout`); slot 0 is the base alone. A linear
layer keeps every slot's packed signs and α in one stack ([slots, ceil(K/32), N] int32 and
[slots, N] float32, zeros for a slot without a delta in this layer) so a mixed batch is one
`bitdelta_linear_multi` call. Tensors a delta stores whole (embeddings, norms, lm_head, or a
projection left uncompressed) are kept per tenant as full copies and applied to that
tenant's rows only: they are small next to the base for the fine-tunes BitDelta targets,
and counted in the tenant's bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812  (torch's own convention)

from kernels import bitdelta_linear_multi, packed_words


@dataclass(frozen=True)
class Group:
    slot: int
    lo: int  # rows lo:hi of the batch
    hi: int


@dataclass(frozen=True)
class Layout:
    """Which rows of a batch belong to which tenant slot (rows sorted by slot)."""

    groups: tuple[Group, ...]
    seg_starts: tuple[int, ...]  # one entry per slot of the stacks, plus the end
    rows: int
    # On CUDA, seg_starts uploaded once for every layer of the step (int32): the kernels
    # then take it unchecked, with the most rows any slot has as their bound.
    device_starts: torch.Tensor | None = None

    def segments(self) -> torch.Tensor | tuple[int, ...]:
        return self.seg_starts if self.device_starts is None else self.device_starts

    def max_rows(self) -> int:
        return max(b - a for a, b in itertools.pairwise(self.seg_starts))

    @classmethod
    def of(cls, slots: Sequence[int], counts: Sequence[int], capacity: int,
           device: torch.device | None = None) -> Layout:
        """Consecutive runs of `counts[i]` rows for `slots[i]` (non-decreasing slots)."""
        if any(b < a for a, b in itertools.pairwise(slots)):
            raise ValueError("rows must be sorted by tenant slot")
        groups: list[Group] = []
        per_slot, row = [0] * capacity, 0
        for slot, count in zip(slots, counts, strict=True):
            if groups and groups[-1].slot == slot:
                groups[-1] = Group(slot, groups[-1].lo, row + count)
            else:
                groups.append(Group(slot, row, row + count))
            per_slot[slot] += count
            row += count
        starts = [0]
        for count in per_slot:
            starts.append(starts[-1] + count)
        on_device = None
        if device is not None and device.type == "cuda":
            on_device = torch.tensor(starts, dtype=torch.int32, device=device)
        return cls(tuple(groups), tuple(starts), row, on_device)


class MultiTenantLinear:
    """y = x·Wᵀ (+ b) for base rows, x·Wᵀ + α ⊙ (x·sign(ΔW)ᵀ) (+ b) for a tenant's rows.

    The stack of signs and α exists from the first tenant that compresses this layer on
    (a layer no tenant compresses, such as lm_head usually, holds none).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight = weight.detach()
        self.bias = None if bias is None else bias.detach()
        self.n, self.k = self.weight.shape
        # One tuple, replaced whole when the stack grows, so a reader never pairs the bits
        # of one stack with the scales of another.
        self.stack: tuple[torch.Tensor, torch.Tensor] | None = None
        self.with_bits: set[int] = set()
        self.overrides: dict[int, torch.Tensor] = {}

    def grow(self, capacity: int) -> None:
        if self.stack is None:
            return
        bits, scale = self.stack
        extra = capacity - bits.shape[0]
        if extra > 0:
            self.stack = (torch.cat([bits, bits.new_zeros(extra, *bits.shape[1:])]),
                          torch.cat([scale, scale.new_zeros(extra, scale.shape[1])]))

    def install(self, slot: int, bits: torch.Tensor, scale: torch.Tensor, capacity: int
                ) -> None:
        if tuple(bits.shape) != (packed_words(self.k), self.n):
            raise ValueError(f"bits of shape {tuple(bits.shape)}, the layer needs "
                             f"{(packed_words(self.k), self.n)}")
        if self.stack is None:
            device = self.weight.device
            self.stack = (torch.zeros(capacity, *bits.shape, dtype=torch.int32, device=device),
                          torch.zeros(capacity, self.n, dtype=torch.float32, device=device))
        stack_bits, stack_scale = self.stack
        stack_bits[slot] = bits.to(stack_bits.device)
        stack_scale[slot] = scale.to(stack_scale.device, torch.float32).expand(self.n)
        self.with_bits.add(slot)

    def clear(self, slot: int) -> None:
        if self.stack is not None:
            self.stack[1][slot] = 0  # α = 0: the slot's stale signs add nothing
        self.with_bits.discard(slot)
        self.overrides.pop(slot, None)

    def __call__(self, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        if self.stack is not None and any(g.slot in self.with_bits for g in layout.groups):
            bits, scale = self.stack
            y = bitdelta_linear_multi(x, self.weight, bits, scale, layout.segments(),
                                      max_rows_per_tenant=layout.max_rows())
            if self.bias is not None:
                y = y + self.bias
        else:
            y = F.linear(x, self.weight, self.bias)
        for g in layout.groups:
            if g.slot in self.overrides:
                y[g.lo:g.hi] = F.linear(x[g.lo:g.hi], self.overrides[g.slot], self.bias)
        return y

    def slot_bytes(self) -> int:
        """What one slot of the stack holds: packed signs and one α per output row."""
        return packed_words(self.k) * self.n * 4 + self.n * 4


class TenantEmbedding:
    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight.detach()
        self.overrides: dict[int, torch.Tensor] = {}

    def __call__(self, ids: torch.Tensor, layout: Layout) -> torch.Tensor:
        out = F.embedding(ids, self.weight)
        for g in layout.groups:
            if g.slot in self.overrides:
                out[g.lo:g.hi] = F.embedding(ids[g.lo:g.hi], self.overrides[g.slot])
        return out


class TenantRMSNorm:
    """Llama's RMSNorm (in float32, the weight applied in the input's dtype), per tenant."""

    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        self.weight = weight.detach()
        self.eps = eps
        self.overrides: dict[int, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        out = normed * self.weight
        for g in layout.groups:
            if g.slot in self.overrides:
                out[g.lo:g.hi] = normed[g.lo:g.hi] * self.overrides[g.slot]
        return out
