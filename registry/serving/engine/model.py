"""A Llama-family decoder run over a flat batch of many requests and tenants.

`transformers` loads the base (its weights, rotary embedding and activation); the forward
pass is ours, because a continuous batch is a flat list of rows (each request's new tokens:
its whole prompt at first, then one token a step) with one KV cache per request, and every
layer must see which rows belong to which tenant (`Layout`). Attention runs per request on
its own cache; everything else runs on all rows at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812  (torch's own convention)

from compress.bitdelta import BitDelta
from compress.modeling.model import build_model, causal_lm_config
from compress.tensorio import Checkpoint, describe_model
from registry.serving.engine.errors import UnsupportedAdapter, UnsupportedModel
from registry.serving.engine.layers import (
    Layout,
    MultiTenantLinear,
    TenantEmbedding,
    TenantRMSNorm,
)

SUPPORTED_TYPES = ("llama", "mistral")
EMBEDDING = "model.embed_tokens"
LM_HEAD = "lm_head"


class KVCache:
    """One request's keys and values for every layer, allocated for its whole length."""

    def __init__(self, layers: int, kv_heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (layers, kv_heads, capacity, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


@dataclass
class StepRows:
    """One request's rows in a step: its tenant slot, the new tokens and its cache."""

    slot: int
    tokens: list[int]
    cache: KVCache


class EngineModel:
    def __init__(self, base: Checkpoint, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> None:
        source = describe_model(base.source)
        config = causal_lm_config(base.config, source)
        if config.model_type not in SUPPORTED_TYPES:
            raise UnsupportedModel(
                f"the engine runs {', '.join(SUPPORTED_TYPES)} models, this base is a "
                f"{config.model_type!r}; serve it with a merged model instead")
        if getattr(config, "sliding_window", None):
            raise UnsupportedModel("sliding-window attention is not supported by the engine")
        # deltahub's own reader, not from_pretrained: pickles stay refused.
        hf: Any = build_model(config, ((n, base.finite_tensor(n)) for n in base.manifest.names),
                              dtype=dtype, device=torch.device(device), source=source)
        self.config = config
        self.hf = hf  # owns the weights the wrappers below share
        self.device = torch.device(device)
        self.dtype = dtype
        self.capacity = 1  # slots in every stack; slot 0 is the base alone
        self.layers = config.num_hidden_layers
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.max_positions = int(config.max_position_embeddings)
        self.linears = {name: MultiTenantLinear(m.weight, m.bias)
                        for name, m in hf.named_modules() if isinstance(m, torch.nn.Linear)}
        self.norms = {name: TenantRMSNorm(m.weight, m.variance_epsilon)
                      for name, m in hf.named_modules() if hasattr(m, "variance_epsilon")}
        self.embedding = TenantEmbedding(hf.get_input_embeddings().weight)
        self.tied = bool(getattr(config, "tie_word_embeddings", False))

    def base_bytes(self) -> int:
        return sum(t.nbytes for t in {p.data_ptr(): p for p in self.hf.state_dict().values()}
                   .values())

    # -- tenants ------------------------------------------------------------------------
    def grow(self, capacity: int) -> None:
        for linear in self.linears.values():
            linear.grow(capacity)
        self.capacity = max(self.capacity, capacity)

    def check(self, delta: BitDelta) -> int:
        """The bytes the tenant takes here (its slot of each layer it compresses, and its
        full tensors); raises if something it changes has no home."""
        total = 0
        for spec in delta.summary.compressed.values():
            if spec.module not in self.linears:
                raise UnsupportedAdapter(f"the delta compresses {spec.module}, which is not a "
                                         "linear layer of this base")
            total += self.linears[spec.module].slot_bytes()
        for name, tensor in delta.tensors.items():
            total += len(self._owner(name)) * tensor.numel() * self.dtype.itemsize
        return total

    def install(self, slot: int, delta: BitDelta) -> None:
        for weight in delta.weights.values():
            self.linears[weight.spec.module].install(slot, weight.bits, weight.scale,
                                                     self.capacity)
        for name, tensor in delta.tensors.items():
            for owner in self._owner(name):
                owner.overrides[slot] = tensor.to(self.device, self.dtype)

    def clear(self, slot: int) -> None:
        for linear in self.linears.values():
            linear.clear(slot)
        for norm in self.norms.values():
            norm.overrides.pop(slot, None)
        self.embedding.overrides.pop(slot, None)

    def _owner(self, tensor_name: str) -> list[Any]:
        module, _, leaf = tensor_name.rpartition(".")
        if leaf == "weight" and module == EMBEDDING:
            return [self.embedding, self.linears[LM_HEAD]] if self.tied else [self.embedding]
        if leaf == "weight" and module in self.linears:
            return [self.linears[module]]
        if leaf == "weight" and module in self.norms:
            return [self.norms[module]]
        raise UnsupportedAdapter(
            f"the delta changes {tensor_name}, which the engine cannot hold per tenant "
            "(it serves changed linear weights, embeddings and norms); merge it instead")

    # -- forward ------------------------------------------------------------------------
    def new_cache(self, capacity: int) -> KVCache:
        return KVCache(self.layers, self.kv_heads, capacity, self.head_dim, self.dtype,
                       self.device)

    @torch.inference_mode()
    def forward(self, batch: Sequence[StepRows]) -> torch.Tensor:
        """Logits [len(batch), vocab] (float32) at each sequence's last new token.

        `batch` must be sorted by slot; every cache gains the new tokens.
        """
        counts = [len(s.tokens) for s in batch]
        layout = Layout.of([s.slot for s in batch], counts, self.capacity, self.device)
        ids = torch.tensor([t for s in batch for t in s.tokens], device=self.device)
        positions = torch.cat([torch.arange(s.cache.length, s.cache.length + len(s.tokens))
                               for s in batch]).to(self.device)
        h = self.embedding(ids, layout)
        rotary = self.hf.model.rotary_emb(h, positions[None])
        for index, layer in enumerate(self.hf.model.layers):
            prefix = f"model.layers.{index}."
            x = self.norms[prefix + "input_layernorm"](h, layout)
            h = h + self._attention(prefix + "self_attn.", index, x, layout, rotary, batch)
            x = self.norms[prefix + "post_attention_layernorm"](h, layout)
            gate = self.linears[prefix + "mlp.gate_proj"](x, layout)
            up = self.linears[prefix + "mlp.up_proj"](x, layout)
            h = h + self.linears[prefix + "mlp.down_proj"](layer.mlp.act_fn(gate) * up, layout)
        for s in batch:
            s.cache.length += len(s.tokens)
        h = self.norms["model.norm"](h, layout)
        ends = torch.tensor(counts).cumsum(0) - 1
        last = Layout.of([s.slot for s in batch], [1] * len(batch), self.capacity, self.device)
        return self.linears[LM_HEAD](h[ends.to(self.device)], last).float()

    def _attention(self, prefix: str, index: int, x: torch.Tensor, layout: Layout,
                   rotary: tuple[torch.Tensor, torch.Tensor], batch: Sequence[StepRows]
                   ) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        rows = x.shape[0]
        q = self.linears[prefix + "q_proj"](x, layout).view(rows, self.heads, self.head_dim)
        k = self.linears[prefix + "k_proj"](x, layout).view(rows, self.kv_heads, self.head_dim)
        v = self.linears[prefix + "v_proj"](x, layout).view(rows, self.kv_heads, self.head_dim)
        cos, sin = rotary
        q, k = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)
        q, k, v = q[0], k[0], v.transpose(0, 1)  # [heads, rows, head_dim]
        out = torch.empty_like(q)
        row = 0
        for s in batch:
            n, past = len(s.tokens), s.cache.length
            keys, values = s.cache.keys[index], s.cache.values[index]
            keys[:, past:past + n] = k[:, row:row + n]
            values[:, past:past + n] = v[:, row:row + n]
            out[:, row:row + n] = _causal_attention(q[:, row:row + n], keys[:, :past + n],
                                                    values[:, :past + n], past)
            row += n
        merged = out.transpose(0, 1).reshape(rows, self.heads * self.head_dim)
        return self.linears[prefix + "o_proj"](merged, layout)


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int
                      ) -> torch.Tensor:
    """q [H, n, d] at positions past…past+n-1 over k, v [KVH, past+n, d]."""
    groups = q.shape[0] // k.shape[0]
    if groups > 1:
        k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
    n, total = q.shape[1], k.shape[1]
    allowed = (torch.arange(total, device=q.device)[None, :]
               <= torch.arange(past, past + n, device=q.device)[:, None])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
