"""LoRA extraction: distill a full fine-tune into a standard PEFT LoRA adapter.

Per target linear module, ΔW is factored by a randomized truncated SVD (lowrank.py) at a
fixed rank or a target error; changed non-target modules are carried whole through
`modules_to_save` by default, and every changed tensor left out is reported. Streams one
tensor pair at a time. See docs/codecs.md, "LoRA extraction".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from compress.errors import InvalidParameter
from compress.lora.adapter import FactorSpill, adapter_config, self_check, write_adapter_weights
from compress.lora.format import ADAPTER_CONFIG, is_positive_int, lora_key
from compress.lora.lowrank import (
    MIN_OVERSAMPLE,
    OVERSAMPLE_FRACTION,
    POWER_ITERATIONS,
    factorize,
)
from compress.lora.report import ChangedTensor, LoraReport, ModuleResult
from compress.progress import ProgressCounter, ProgressFn, no_progress
from compress.targets import (
    DEFAULT_TARGET_MODULES,
    TargetSpec,
    layer_index,
    module_name,
    owner_module,
    select_linear_weights,
)
from compress.tensorio import (
    Manifest,
    ModelInput,
    ModelPair,
    TensorPair,
    atomic_output_dir,
    describe_model,
)

FactorDtype = Literal["float32", "finetune"]
# The cap on a searched rank when none is given. Past a few hundred the sketch is no
# longer much cheaper than an exact SVD, and serving systems size their LoRA buffers by
# the largest rank they accept (vLLM's --max-lora-rank), so every rank costs requests.
DEFAULT_MAX_RANK = 256
SPILL_NAME = ".lora-factors.spill"


@dataclass(frozen=True)
class RankRule:
    """How each module's rank is chosen, and how its factors are computed and stored."""

    rank: int | None
    target_error: float | None
    max_rank: int | None
    factor_dtype: FactorDtype
    seed: int
    device: torch.device | str | None


def extract_lora(base: ModelInput, finetune: ModelInput, out: str | os.PathLike[str],
                 rank: int | None = None, target_error: float | None = None, *,
                 max_rank: int | None = None,
                 targets: TargetSpec = DEFAULT_TARGET_MODULES, targets_only: bool = False,
                 factor_dtype: FactorDtype = "float32",
                 base_model_name_or_path: str | None = None, seed: int = 0,
                 device: torch.device | str | None = None,
                 progress: ProgressFn = no_progress) -> LoraReport:
    """Write a PEFT LoRA adapter approximating `finetune` − `base` into the new dir `out`.

    `base` and `finetune` are paths or TensorSources. Exactly one of `rank` and `target_error`
    (the smallest rank with ‖ΔW − B·A‖/‖ΔW‖ ≤ target_error, capped at `max_rank`; capped modules
    are flagged) must be given. `factor_dtype`: float32 or the fine-tune's dtype (errors are
    measured as stored); `device` runs the SVD there. `targets` must name nn.Linear modules;
    changed non-targets go through modules_to_save unless `targets_only` (docs/codecs.md,
    "LoRA extraction"). Raises a CodecError subclass on bad input, having written nothing.
    """
    rule = _check_rule(RankRule(rank, target_error, max_rank, factor_dtype, seed, device))
    with ModelPair.open(base, finetune) as pair:
        target_names = _select_targets(pair.base.manifest, targets, rank)
        report = LoraReport(settings=_settings(rule, targets, targets_only, base, finetune,
                                               pair.base.manifest),
                            finetune_bytes=pair.finetune_bytes)
        with atomic_output_dir(Path(out)) as scratch:
            spill = FactorSpill(scratch / SPILL_NAME)
            try:
                _scan(pair, target_names, rule, targets_only, spill, report, progress)
                saved_modules = sorted({owner_module(c.name) for c in report.saved})
                weights = write_adapter_weights(scratch, spill, pair.finetune, saved_modules)
            finally:
                spill.remove()
            config = adapter_config(report.modules, pair.base.manifest, saved_modules,
                                    base_model_name_or_path or describe_model(base))
            (scratch / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            self_check(weights, config, pair.base.manifest)
            report.adapter_bytes = sum(f.stat().st_size for f in scratch.iterdir())
            report.write(scratch)
    return report


def _check_rule(rule: RankRule) -> RankRule:
    """Validate the rank rule; fill in the default cap of a target-error search."""
    if (rule.rank is None) == (rule.target_error is None):
        raise InvalidParameter("give exactly one of rank (--rank R) and target_error "
                               "(--target-error E)")
    if rule.factor_dtype not in ("float32", "finetune"):
        raise InvalidParameter(f"factor_dtype must be 'float32' or 'finetune', not "
                               f"{rule.factor_dtype!r}")
    if rule.rank is not None:
        if not is_positive_int(rule.rank):
            raise InvalidParameter(f"rank must be a positive integer, got {rule.rank!r}")
        if rule.max_rank is not None:
            raise InvalidParameter("max_rank (--max-rank) only applies with target_error; "
                                   "a fixed rank is its own cap")
        return rule
    error = rule.target_error
    if not (isinstance(error, int | float) and 0.0 < error < 1.0):
        raise InvalidParameter(
            f"target_error must lie strictly between 0 and 1 (a relative Frobenius error, "
            f"e.g. 0.1 for 10 %), got {error!r}")
    if rule.max_rank is not None and not is_positive_int(rule.max_rank):
        raise InvalidParameter(f"max_rank must be a positive integer, got {rule.max_rank!r}")
    return RankRule(None, error, rule.max_rank or DEFAULT_MAX_RANK, rule.factor_dtype,
                    rule.seed, rule.device)


def _select_targets(manifest: Manifest, targets: TargetSpec, rank: int | None) -> list[str]:
    """The target weights; a fixed rank must fit every one of them (checked before any work)."""
    names = select_linear_weights(manifest, targets)
    if rank is not None:
        too_small = [f"{module_name(n)} {list(manifest[n].shape)}" for n in names
                     if rank > min(manifest[n].shape)]
        if too_small:
            limit = min(min(manifest[n].shape) for n in names)
            raise InvalidParameter(
                f"rank {rank} exceeds min(out, in) of {len(too_small)} target module(s): "
                f"{'; '.join(too_small[:5])}{' ...' if len(too_small) > 5 else ''}; "
                f"choose a rank of at most {limit}, or a target error with a max rank")
    return names


def _settings(rule: RankRule, targets: TargetSpec, targets_only: bool,
              base: ModelInput, finetune: ModelInput, manifest: Manifest) -> dict[str, Any]:
    return {
        "mode": "rank" if rule.rank is not None else "target_error", "rank": rule.rank,
        "target_error": rule.target_error, "max_rank": rule.max_rank,
        "factor_dtype": rule.factor_dtype,
        "targets": targets if isinstance(targets, str) else list(targets),
        "targets_only": targets_only, "base": describe_model(base),
        "finetune": describe_model(finetune),
        "base_manifest_digest": manifest.digest(),
        "sketch": {"power_iterations": POWER_ITERATIONS, "min_oversample": MIN_OVERSAMPLE,
                   "oversample_fraction": OVERSAMPLE_FRACTION, "seed": rule.seed},
    }


def _scan(pair: ModelPair, target_names: Sequence[str], rule: RankRule, targets_only: bool,
          spill: FactorSpill, report: LoraReport, progress: ProgressFn) -> None:
    """One pass over the tensors: factor the targets, measure every other change."""
    targets = set(target_names)
    modules = [module_name(n) for n in target_names]
    counter = ProgressCounter(progress, pair.finetune_bytes)
    for name in pair.names:
        tensors = pair.read(name)
        nbytes = pair.finetune_nbytes(name)
        if name in targets:
            _factor_one(tensors, nbytes, rule, spill, report)
        elif tensors.changed:
            reason = _why_not_saved(name, modules, targets_only, pair.base.manifest)
            report.changed.append(_describe_change(tensors, nbytes, reason))
        counter.advance(nbytes, name)
    if not report.modules:
        raise InvalidParameter("the fine-tune does not change any target module, so there "
                               "is nothing to extract; check the targets, or that FINETUNE "
                               "differs from BASE")


def _factor_one(tensors: TensorPair, nbytes: int, rule: RankRule, spill: FactorSpill,
                report: LoraReport) -> None:
    module = module_name(tensors.name)
    if not tensors.changed:
        report.unchanged.append(module)
        return
    dtype = tensors.finetune.dtype if rule.factor_dtype == "finetune" else torch.float32
    delta = tensors.delta()
    factors = factorize(delta, rank=rule.rank, target_error=rule.target_error,
                        max_rank=rule.max_rank, dtype=dtype, seed=rule.seed,
                        device=rule.device)
    if factors.rank == 0:  # stored values differ only in dtype: ΔW is exactly zero
        report.unchanged.append(module)
        return
    spill.put(lora_key(module, "lora_A"), factors.A)
    spill.put(lora_key(module, "lora_B"), factors.B)
    out_features, in_features = tensors.base.shape
    report.modules.append(ModuleResult(
        module=module, shape=(out_features, in_features), rank=factors.rank,
        error=factors.error, energy=factors.energy, target_met=factors.target_met,
        bytes_in=nbytes, bytes_out=factors.A.nbytes + factors.B.nbytes,
        singular_values=factors.singular_values.tolist(),
        weight_rel_error=_weight_relative(factors.error, delta, tensors.finetune)))


def _weight_relative(delta_rel: float, delta: torch.Tensor, finetune: torch.Tensor
                     ) -> float | None:
    """‖W_ft − Ŵ_ft‖ / ‖W_ft‖ from ‖ΔW − B·A‖ / ‖ΔW‖ (W_ft − Ŵ_ft = ΔW − B·A); None when
    W_ft is all zero."""
    finetune_norm = float(torch.linalg.vector_norm(finetune.float()))
    if finetune_norm == 0.0:
        return None
    return delta_rel * float(torch.linalg.vector_norm(delta)) / finetune_norm


def _why_not_saved(name: str, target_modules: Sequence[str], targets_only: bool,
                   manifest: Manifest) -> str:
    """Why modules_to_save cannot (or should not) carry this tensor; "" if it does."""
    module = owner_module(name)
    if not module:
        return "outside any module; PEFT modules_to_save cannot carry a top-level tensor"
    if any(module == t or module.startswith(t + ".") for t in target_modules):
        return (f"in a LoRA target module; the PEFT LoRA layer {module!r} cannot also carry "
                "its other tensors (e.g. a bias)")
    if any(t.startswith(module + ".") for t in target_modules):
        return f"in a module containing LoRA targets; modules_to_save cannot wrap {module!r}"
    if targets_only:
        return ("not a LoRA target; left out by targets_only (--targets-only); without it "
                "modules_to_save carries it")
    weight = manifest.get(f"{module}.weight")
    if layer_index(module) is not None and weight is not None and len(weight.shape) == 2:
        return ("a layer's matrix, not a LoRA target; add it to the targets (--target) to "
                "adapt it at low rank")
    return ""


def _describe_change(tensors: TensorPair, nbytes: int, reason: str) -> ChangedTensor:
    """How far a non-target tensor moved, in slabs so a large embedding is not copied whole."""
    base, tuned = tensors.base.reshape(-1), tensors.finetune.reshape(-1)
    step = 1 << 24
    diff_sq = base_sq = max_abs = 0.0
    for i in range(0, base.numel(), step):
        b = base[i:i + step].double()
        diff = tuned[i:i + step].double() - b
        diff_sq += float((diff**2).sum())
        base_sq += float((b**2).sum())
        max_abs = max(max_abs, float(diff.abs().max()))
    relative = math.sqrt(diff_sq / base_sq) if base_sq else math.inf
    return ChangedTensor(tensors.name, nbytes, relative, max_abs, saved=not reason,
                         reason=reason)
