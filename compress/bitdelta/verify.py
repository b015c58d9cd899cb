"""Verify a BitDelta delta against its uncompressed fine-tune, one compressed layer at a time.

Per compressed weight, on seeded random activations: kernel agreement (the fused kernel
against the float32 reference; a failure is a bug) and compression error against x·W_ftᵀ
(information: 1-bit deltas are lossy). Streams one module at a time.
See docs/codecs.md, "Verification".
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from compress.bitdelta.codec import decompress_delta, relative_error
from compress.bitdelta.format import CompressedSpec, bits_key, inspect_bitdelta, scale_key
from compress.bitdelta.merge import CompressedWeight, read_compressed
from compress.bitdelta.report import json_float
from compress.errors import InvalidParameter
from compress.progress import ProgressCounter, ProgressFn, no_progress
from compress.tensorio import (
    TORCH_DTYPES,
    Checkpoint,
    Manifest,
    ModelInput,
    ModelPair,
    TensorPair,
    describe_model,
    prefetching,
)
from kernels import (
    KERNEL_TOLERANCE,
    Backend,
    LayerCheck,
    random_activations,
    resolve_backend,
    select_config,
    triton_interpreted,
    verify_layer,
)

DEFAULT_ROWS = 64
HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class LayerResult:
    """One compressed layer: kernel agreement (worst over the batches checked) and errors."""

    module: str
    shape: tuple[int, int]  # [N, K]
    kernel_max_abs_error: float
    kernel_max_rel_error: float  # max |y − y_ref| / max |y_ref|
    kernel_tolerance: float
    kernel_agrees: bool
    compression_rel_error: float  # ‖y − y_ft‖_F / ‖y_ft‖_F
    worst_row_rel_error: float  # max over rows of ‖y_r − y_ft,r‖ / ‖y_ft,r‖
    effect_rel_error: float  # ‖y − y_ft‖_F / ‖y_ft − y_base‖_F
    # The weight errors of the delta as verified (after a distillation changed α, unlike
    # the codec report's): ‖ΔW − ΔŴ‖ / ‖ΔW‖ and ‖W_ft − Ŵ_ft‖ / ‖W_ft‖, Ŵ_ft in float32.
    delta_rel_error: float = math.nan
    weight_rel_error: float = math.nan

    @classmethod
    def from_checks(cls, module: str, shape: tuple[int, int], checks: list[LayerCheck],
                    weight_errors: tuple[float, float] = (math.nan, math.nan)
                    ) -> LayerResult:
        """`checks[0]` ran on every row (it gives the errors); the rest on fewer rows."""
        batch = checks[0]
        return cls(
            module=module, shape=shape,
            kernel_max_abs_error=_worst(c.kernel_max_abs_error for c in checks),
            kernel_max_rel_error=_worst(c.kernel_max_rel_error for c in checks),
            kernel_tolerance=batch.kernel_tolerance,
            kernel_agrees=all(c.kernel_agrees for c in checks),
            compression_rel_error=batch.compression_rel_frobenius,
            worst_row_rel_error=batch.compression_worst_row_rel,
            effect_rel_error=batch.effect_rel_frobenius,
            delta_rel_error=weight_errors[0], weight_rel_error=weight_errors[1],
        )

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "shape": list(self.shape),
                "kernel_max_abs_error": json_float(self.kernel_max_abs_error),
                "kernel_max_rel_error": json_float(self.kernel_max_rel_error),
                "kernel_tolerance": self.kernel_tolerance, "kernel_agrees": self.kernel_agrees,
                "compression_rel_error": json_float(self.compression_rel_error),
                "worst_row_rel_error": json_float(self.worst_row_rel_error),
                "effect_rel_error": json_float(self.effect_rel_error),
                "delta_rel_error": json_float(self.delta_rel_error),
                "weight_rel_error": json_float(self.weight_rel_error)}


@dataclass(frozen=True)
class VerifyReport:
    """Every layer checked, and how: `ok` judges the kernel only; errors are information."""

    base: str
    finetune: str
    delta: str
    layers: list[LayerResult]  # in module order
    device: str
    backend: Literal["triton", "torch"]
    dtype: torch.dtype
    rows: int
    kernel_batches: dict[int, str]  # rows of a kernel check -> the kernel that ran them
    seed: int
    scale_mode: str
    bytes_read: int
    seconds: float

    @property
    def ok(self) -> bool:
        """Every kernel check agreed with the reference (compression error is not judged)."""
        return all(layer.kernel_agrees for layer in self.layers)

    @property
    def kernel_failures(self) -> list[str]:
        return [layer.module for layer in self.layers if not layer.kernel_agrees]

    @property
    def max_kernel_rel_error(self) -> float:
        return _worst(layer.kernel_max_rel_error for layer in self.layers)

    @property
    def mean_compression_error(self) -> float:
        return _mean([layer.compression_rel_error for layer in self.layers])

    @property
    def max_compression_error(self) -> float:
        return _worst(layer.compression_rel_error for layer in self.layers)

    @property
    def max_worst_row_error(self) -> float:
        return _worst(layer.worst_row_rel_error for layer in self.layers)

    @property
    def mean_effect_error(self) -> float:
        return _mean([layer.effect_rel_error for layer in self.layers])

    @property
    def worst_compression_layer(self) -> str:
        """The module with the largest compression error."""
        return max(self.layers, key=lambda r: _sort_key(r.compression_rel_error)).module

    @property
    def worst_layers(self) -> list[LayerResult]:
        """Kernel failures first, then by compression error, largest first."""
        return sorted(self.layers, key=lambda r: (r.kernel_agrees, -_sort_key(
            r.compression_rel_error)))

    def to_dict(self) -> dict[str, Any]:
        summary = {
            "ok": self.ok, "layers": len(self.layers), "kernel_failures": self.kernel_failures,
            "kernel_max_rel_error": json_float(self.max_kernel_rel_error),
            "compression_rel_error_mean": json_float(self.mean_compression_error),
            "compression_rel_error_max": json_float(self.max_compression_error),
            "compression_worst_layer": self.worst_compression_layer,
            "worst_row_rel_error_max": json_float(self.max_worst_row_error),
            "effect_rel_error_mean": json_float(self.mean_effect_error),
            "delta_rel_error_max": json_float(_worst(r.delta_rel_error for r in self.layers)),
            "weight_rel_error_max": json_float(_worst(r.weight_rel_error
                                                      for r in self.layers)),
            "means": "unweighted over layers",
            "device": self.device, "backend": self.backend,
            "dtype": str(self.dtype).removeprefix("torch."), "rows": self.rows,
            "kernel_batches": [{"rows": m, "kernel": k} for m, k in self.kernel_batches.items()],
            "seed": self.seed, "scale_mode": self.scale_mode, "bytes_read": self.bytes_read,
            "seconds": self.seconds,
        }
        return {"base": self.base, "finetune": self.finetune, "delta": self.delta,
                "summary": summary, "layers": [layer.to_dict() for layer in self.layers]}


def verify_delta(
    base: ModelInput, finetune: ModelInput, delta: ModelInput,
    device: str | torch.device | None = None, *,
    rows: int = DEFAULT_ROWS, dtype: torch.dtype | None = None, seed: int = 0,
    backend: Backend = "auto", modules: Collection[str] | None = None,
    progress: ProgressFn = no_progress,
) -> VerifyReport:
    """Check every compressed layer of `delta` (or those in `modules`) against `finetune`.

    Each of the three is a path or a TensorSource (e.g. the registry's stored blobs).
    Raises the codec's errors before any arithmetic when the delta is malformed or made
    against another base (InvalidDelta, IncompatibleModels), when the fine-tune's layout
    differs from the base's (IncompatibleModels), and InvalidParameter for bad options.
    """
    started = time.perf_counter()
    if rows < 1:
        raise InvalidParameter(f"rows must be at least 1, got {rows}")
    target = _resolve_device(device)
    chosen = _resolve_backend(target, backend)
    with ModelPair.open(base, finetune) as pair, Checkpoint.open(delta) as delta_ckpt:
        summary = inspect_bitdelta(delta_ckpt.headers, None, pair.base.manifest)
        specs = _select(summary.compressed, modules)
        compute = dtype or _default_dtype(target, pair.base.manifest, specs)
        if compute not in KERNEL_TOLERANCE:
            raise InvalidParameter(f"dtype must be float16, bfloat16 or float32, got {compute}")
        batches = _kernel_batches(chosen, rows)
        total = sum(_layer_bytes(pair, delta_ckpt, s) for s in specs)
        counter, layers = ProgressCounter(progress, total), []
        with prefetching(_read_layers(pair, delta_ckpt, specs)) as parts:
            for spec, tensors, weight in parts:
                layers.append(_verify_one(spec, tensors, weight, target, compute, rows,
                                          batches, seed, chosen))
                counter.advance(_layer_bytes(pair, delta_ckpt, spec), spec.module)
    return VerifyReport(
        base=describe_model(base), finetune=describe_model(finetune),
        delta=describe_model(delta), layers=layers,
        device=str(target), backend=chosen, dtype=compute, rows=rows, kernel_batches=batches,
        seed=seed, scale_mode=summary.scale_mode.value, bytes_read=total,
        seconds=time.perf_counter() - started)


def layer_activations(module: str, rows: int, k: int, dtype: torch.dtype,
                      device: torch.device, seed: int = 0) -> torch.Tensor:
    """The activations `verify_delta` feeds `module`: the same for a (seed, module) anywhere."""
    digest = hashlib.sha256(f"{seed}:{module}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return random_activations(rows, k, dtype, device, generator)


def _verify_one(spec: CompressedSpec, tensors: TensorPair, weight: CompressedWeight,
                device: torch.device, dtype: torch.dtype, rows: int,
                batches: dict[int, str], seed: int, backend: Literal["triton", "torch"]
                ) -> LayerResult:
    x = layer_activations(spec.module, rows, spec.shape[1], dtype, device, seed)
    w_base = tensors.base.to(device, dtype)
    w_ft = tensors.finetune.to(device)  # verify_layer widens it to float32 on the device
    bits, scale = weight.bits.to(device), weight.scale.to(device)
    checks = [verify_layer(x, w_base, w_ft, bits, scale, backend=backend)]
    checks += [verify_layer(x[:m], w_base, w_ft, bits, scale, backend=backend)
               for m in batches if m != rows]
    return LayerResult.from_checks(spec.module, spec.shape, checks,
                                   _weight_errors(tensors, weight, device))


def _weight_errors(tensors: TensorPair, weight: CompressedWeight, device: torch.device
                   ) -> tuple[float, float]:
    """(delta_rel_error, weight_rel_error) of the stored bits and α, as the codec states
    them (ErrorSums: float32 elements, float64 sums); a few passes over one weight, next
    to the matmuls of the checks."""
    finetune = tensors.finetune.to(device, torch.float32)
    delta = finetune - tensors.base.to(device, torch.float32)
    delta_sq = float(torch.sum(delta * delta, dtype=torch.float64))
    delta -= decompress_delta(weight.bits.to(device), weight.scale.to(device),
                              weight.spec.shape[1])
    error_sq = float(torch.sum(delta * delta, dtype=torch.float64))
    finetune_sq = float(torch.sum(finetune * finetune, dtype=torch.float64))
    return relative_error(error_sq, delta_sq), relative_error(error_sq, finetune_sq)


def _read_layers(pair: ModelPair, delta: Checkpoint, specs: list[CompressedSpec]
                 ) -> Iterator[tuple[CompressedSpec, TensorPair, CompressedWeight]]:
    """Runs on the reader thread: both weights (checked finite) and the checked bits and α."""
    for spec in specs:
        yield spec, pair.read(spec.weight_name), read_compressed(delta, spec)


def _layer_bytes(pair: ModelPair, delta: Checkpoint, spec: CompressedSpec) -> int:
    return (pair.base.entry(spec.weight_name).nbytes + pair.finetune_nbytes(spec.weight_name)
            + delta.entry(bits_key(spec.module)).nbytes
            + delta.entry(scale_key(spec.module)).nbytes)


def _select(compressed: dict[str, CompressedSpec], modules: Collection[str] | None
            ) -> list[CompressedSpec]:
    if modules is None:
        return list(compressed.values())
    unknown = sorted(set(modules) - set(compressed))
    if unknown:
        raise InvalidParameter(f"the delta compresses no module named {', '.join(unknown)}; "
                               f"it has {len(compressed)}, e.g. {next(iter(compressed))}")
    if not modules:
        raise InvalidParameter("modules is empty: name at least one, or pass None for all")
    return [spec for name, spec in compressed.items() if name in modules]


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except RuntimeError as exc:
        raise InvalidParameter(f"device {device!r} is not a torch device ({exc})") from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameter(f"device {device!r} was asked for but CUDA is not available "
                               "here; use the CPU (device 'cpu')")
    return target


def _resolve_backend(device: torch.device, backend: Backend) -> Literal["triton", "torch"]:
    try:
        chosen = resolve_backend(device, backend)
    except (RuntimeError, ValueError) as exc:
        raise InvalidParameter(str(exc)) from exc
    if chosen == "triton" and device.type != "cuda" and not triton_interpreted():
        raise InvalidParameter(
            "the Triton kernels run on the CPU only in Triton's interpreter: set "
            "TRITON_INTERPRET=1 in the environment before starting, or verify on a GPU "
            "(device 'cuda'), or use the torch backend")
    return chosen


def _default_dtype(device: torch.device, base: Manifest, specs: list[CompressedSpec]
                   ) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32
    stored = {TORCH_DTYPES[base[s.weight_name].dtype] for s in specs}
    return stored.pop() if len(stored) == 1 and stored <= set(HALF_DTYPES) else torch.float16


def _kernel_batches(backend: Literal["triton", "torch"], rows: int) -> dict[int, str]:
    if backend == "torch":
        return {rows: "torch"}
    return {m: select_config(m, m).kind for m in sorted({1, rows})}


def _worst(values: Iterable[float]) -> float:
    """The largest value, NaN counting as larger than anything (a NaN error is a failure)."""
    return max(values, key=lambda v: (math.isnan(v), v), default=0.0)


def _sort_key(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0
