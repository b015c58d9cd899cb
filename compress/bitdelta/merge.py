"""Turn a BitDelta delta back into weights: load it, apply it in memory, merge it on disk.

Ŵ_ft = W_base + α ⊙ sign(ΔW) in float32, rounded to the fine-tune's dtype. Structural checks
are `inspect_bitdelta`'s; this module adds those that need tensor data (finite values, zero
padding bits). See docs/codecs.md, "Merge and apply".
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compress.bitdelta.codec import decompress_delta
from compress.bitdelta.format import (
    BitDeltaSummary,
    CompressedSpec,
    bits_key,
    check_against_base,
    check_bits_padding,
    inspect_bitdelta,
    scale_key,
)
from compress.errors import InvalidDelta
from compress.progress import ProgressCounter, ProgressFn, no_progress
from compress.targets import module_name
from compress.tensorio import (
    DEFAULT_MAX_SHARD_BYTES,
    SAFETENSORS_DTYPES,
    TORCH_DTYPES,
    Checkpoint,
    Manifest,
    PlannedTensor,
    ShardedWriter,
    TensorSpec,
    atomic_output_dir,
    copy_config,
    ensure_finite,
    prefetching,
)

MODEL_STEM = "model"


@dataclass(frozen=True)
class CompressedWeight:
    spec: CompressedSpec
    bits: torch.Tensor  # int32 [ceil(K/32), N]
    scale: torch.Tensor  # float32 [N] or []

    def delta(self) -> torch.Tensor:
        """α ⊙ sign(ΔW), float32 [N, K]."""
        return decompress_delta(self.bits, self.scale, self.spec.shape[1])


@dataclass(frozen=True)
class BitDelta:
    """A delta loaded in memory (it is about a tenth of the fine-tune)."""

    summary: BitDeltaSummary
    weights: dict[str, CompressedWeight]  # by weight name, "<module>.weight"
    tensors: dict[str, torch.Tensor]  # stored fine-tune tensors
    config: dict[str, Any] | None


@dataclass(frozen=True)
class MergeReport:
    files: list[str]
    reconstructed: int  # weights rebuilt from bits
    replaced: int  # tensors taken from the delta
    copied: int  # tensors taken from the base
    bytes_out: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "reconstructed": self.reconstructed,
                "replaced": self.replaced, "copied": self.copied, "bytes_out": self.bytes_out,
                "seconds": self.seconds}


def load_bitdelta(path: str | os.PathLike[str], base: Manifest | None = None) -> BitDelta:
    """Read and validate a delta directory (or its single .safetensors file).

    With `base`, also check that the delta was made against it.
    """
    with Checkpoint.open(path) as delta:
        summary = inspect_bitdelta(delta.headers, None, base)  # the index was checked on open
        weights = {spec.weight_name: read_compressed(delta, spec)
                   for spec in summary.compressed.values()}
        tensors = {name: delta.finite_tensor(name) for name in summary.full_tensors}
        return BitDelta(summary, weights, tensors, delta.config)


def apply_bitdelta(base_state: Mapping[str, torch.Tensor], delta: BitDelta,
                   device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The fine-tune's state dict rebuilt from a base state dict and a loaded delta.

    Names and shapes are checked against the delta; dtypes are not, so a base loaded in
    another precision works (the manifest digest, which covers dtypes, is checked when
    merging files). Compressed weights come back in the fine-tune's dtype, as in a merge.
    """
    specs = (TensorSpec(name, SAFETENSORS_DTYPES.get(t.dtype, str(t.dtype)), tuple(t.shape), "")
             for name, t in base_state.items())
    check_against_base(delta.summary, Manifest(specs), check_digest=False)
    merged: dict[str, torch.Tensor] = {}
    for name, tensor in base_state.items():
        if name in delta.tensors:
            merged[name] = delta.tensors[name]
        elif name in delta.weights:
            merged[name] = reconstruct(tensor.detach(), delta.weights[name], torch.device(device))
        else:
            merged[name] = tensor
    return merged


def reconstruct(base: torch.Tensor, weight: CompressedWeight, device: torch.device
                ) -> torch.Tensor:
    """Ŵ_ft = W_base + α ⊙ sign(ΔW) in float32, rounded to the fine-tune's dtype, on the CPU."""
    bits, scale = weight.bits.to(device), weight.scale.to(device)
    w = decompress_delta(bits, scale, weight.spec.shape[1])
    w += base.to(device)  # float32 += fp16/bf16 computes in float32
    return w.to(TORCH_DTYPES[weight.spec.dtype]).cpu()


def merge_bitdelta(base: str | os.PathLike[str], delta: str | os.PathLike[str],
                   out: str | os.PathLike[str], *, device: str | torch.device = "cpu",
                   progress: ProgressFn = no_progress,
                   max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> MergeReport:
    """Write base + delta as a safetensors model in the new directory `out`."""
    started = time.perf_counter()
    with Checkpoint.open(base) as base_ckpt, Checkpoint.open(delta) as delta_ckpt:
        summary = inspect_bitdelta(delta_ckpt.headers, None, base_ckpt.manifest)
        plan = _merged_plan(base_ckpt.manifest, summary)
        counter = ProgressCounter(progress, sum(p.nbytes for p in plan))
        with atomic_output_dir(Path(out)) as scratch:
            writer = ShardedWriter(scratch, plan, {"format": "pt"}, stem=MODEL_STEM,
                                   max_shard_bytes=max_shard_bytes)
            try:
                with prefetching(_read_parts(base_ckpt, delta_ckpt, summary, plan)) as parts:
                    for item, tensor, weight in parts:
                        if weight is not None:
                            tensor = reconstruct(tensor, weight, torch.device(device))
                            ensure_finite(item.name, tensor, "the merged model (fp overflow)")
                        writer.write(item.name, tensor)
                        counter.advance(item.nbytes, item.name)
                files = writer.close()
            except BaseException:
                writer.abort()
                raise
            bytes_out = sum(f.stat().st_size for f in files if f.suffix == ".safetensors")
            # The fine-tune's config.json carried by the delta, else the base's.
            copy_config([delta_ckpt.path, base_ckpt.path], scratch)
    reconstructed, replaced, copied = _counts(plan, summary)
    return MergeReport(files=[f.name for f in files], reconstructed=reconstructed,
                       replaced=replaced, copied=copied, bytes_out=bytes_out,
                       seconds=time.perf_counter() - started)


def read_compressed(delta: Checkpoint, spec: CompressedSpec) -> CompressedWeight:
    bits = delta.tensor(bits_key(spec.module))
    check_bits_padding(spec.module, bits, spec.shape[1])
    return CompressedWeight(spec, bits, delta.finite_tensor(scale_key(spec.module)))


def _merged_plan(base: Manifest, summary: BitDeltaSummary) -> list[PlannedTensor]:
    """The fine-tune's layout: base names and shapes, with the fine-tune's dtypes."""
    compressed = {spec.weight_name: spec for spec in summary.compressed.values()}
    plan = []
    for spec in base:
        if spec.name in summary.full_tensors:
            dtype = summary.full_tensors[spec.name].dtype
        elif spec.name in compressed:
            dtype = compressed[spec.name].dtype
        else:
            dtype = spec.dtype
        plan.append(PlannedTensor(spec.name, dtype, spec.shape))
    digest = Manifest(TensorSpec(p.name, p.dtype, p.shape, "") for p in plan).digest()
    if digest != summary.finetune_manifest_digest:
        raise InvalidDelta(
            "base + delta does not have the layout the delta recorded for its fine-tune "
            f"(manifest digest {digest[:12]}…, expected {summary.finetune_manifest_digest[:12]}…);"
            " the delta's metadata and tensors disagree: re-compress it"
        )
    return plan


def _read_parts(base: Checkpoint, delta: Checkpoint, summary: BitDeltaSummary,
                plan: list[PlannedTensor]
                ) -> Iterator[tuple[PlannedTensor, torch.Tensor, CompressedWeight | None]]:
    """Runs on the reader thread: each output tensor's inputs, checked finite."""
    for item in plan:
        module = module_name(item.name)
        if item.name in summary.full_tensors:
            yield item, delta.finite_tensor(item.name), None
        elif item.name.endswith(".weight") and module in summary.compressed:
            weight = read_compressed(delta, summary.compressed[module])
            yield item, base.finite_tensor(item.name), weight
        else:
            yield item, base.finite_tensor(item.name), None


def _counts(plan: list[PlannedTensor], summary: BitDeltaSummary) -> tuple[int, int, int]:
    replaced = sum(p.name in summary.full_tensors for p in plan)
    reconstructed = len(summary.compressed)
    return reconstructed, replaced, len(plan) - replaced - reconstructed
