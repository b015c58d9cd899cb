"""LoRA: a fine-tune distilled into low-rank factors, ΔW ≈ B·A, in the PEFT format.

Tensors: `factorize` (randomized truncated SVD at a rank or a target error). Models:
`extract_lora` (base + fine-tune -> a PEFT adapter, report and plot). The format:
`parse_adapter_config`, `check_lora_against_base`, `is_adapter_file`.
See docs/codecs.md, "LoRA extraction".
"""

from compress.errors import IncompatibleModels, InvalidDelta
from compress.lora.extraction import DEFAULT_MAX_RANK, FactorDtype, extract_lora
from compress.lora.format import (
    ADAPTER_CONFIG,
    ADAPTER_FILES,
    ADAPTER_WEIGHTS,
    LoraAdapterConfig,
    LoraAdapterSummary,
    check_lora_against_base,
    is_adapter_file,
    lora_key,
    parse_adapter_config,
    saved_module_key,
)
from compress.lora.lowrank import LowRankFactors, factorize, randomized_svd
from compress.lora.report import (
    REPORT_FILE,
    SPECTRA_FILE,
    ChangedTensor,
    LoraReport,
    ModuleResult,
)

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_FILES",
    "ADAPTER_WEIGHTS",
    "DEFAULT_MAX_RANK",
    "REPORT_FILE",
    "SPECTRA_FILE",
    "ChangedTensor",
    "FactorDtype",
    "IncompatibleModels",
    "InvalidDelta",
    "LoraAdapterConfig",
    "LoraAdapterSummary",
    "LoraReport",
    "LowRankFactors",
    "ModuleResult",
    "check_lora_against_base",
    "extract_lora",
    "factorize",
    "is_adapter_file",
    "lora_key",
    "parse_adapter_config",
    "randomized_svd",
    "saved_module_key",
]
