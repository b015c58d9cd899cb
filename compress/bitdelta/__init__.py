"""BitDelta: a fine-tune as its base plus a 1-bit delta, ΔW ≈ α ⊙ sign(ΔW).

Tensors: `compress_delta` / `decompress_delta`. Model directories: `compress_bitdelta`,
`load_bitdelta` / `apply_bitdelta` / `merge_bitdelta`, `verify_delta`, and scale distillation
(`distill_bitdelta`). The format, version 1: `inspect_bitdelta` (the one validator),
`is_delta_file`. See docs/codecs.md.
"""

from compress.bitdelta.codec import compress_delta, decompress_delta
from compress.bitdelta.compression import compress_bitdelta
from compress.bitdelta.distill import DistillConfig, DistillReport, distill_bitdelta
from compress.bitdelta.distill_data import CalibrationSet
from compress.bitdelta.format import (
    DELTA_FILE,
    DELTA_INDEX,
    FORMAT,
    FORMAT_VERSION,
    REPORT_FILE,
    BitDeltaSummary,
    ScaleMode,
    inspect_bitdelta,
    is_delta_file,
)
from compress.bitdelta.merge import (
    BitDelta,
    MergeReport,
    apply_bitdelta,
    load_bitdelta,
    merge_bitdelta,
)
from compress.bitdelta.report import GB, BitDeltaReport
from compress.bitdelta.verify import DEFAULT_ROWS, VerifyReport, verify_delta
from compress.errors import IncompatibleModels, InvalidDelta
from compress.tensorio import CONFIG_FILE  # a delta carries its fine-tune's config.json

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_ROWS",
    "DELTA_FILE",
    "DELTA_INDEX",
    "FORMAT",
    "FORMAT_VERSION",
    "GB",
    "REPORT_FILE",
    "BitDelta",
    "BitDeltaReport",
    "BitDeltaSummary",
    "CalibrationSet",
    "DistillConfig",
    "DistillReport",
    "IncompatibleModels",
    "InvalidDelta",
    "MergeReport",
    "ScaleMode",
    "VerifyReport",
    "apply_bitdelta",
    "compress_bitdelta",
    "compress_delta",
    "decompress_delta",
    "distill_bitdelta",
    "inspect_bitdelta",
    "is_delta_file",
    "load_bitdelta",
    "merge_bitdelta",
    "verify_delta",
]
