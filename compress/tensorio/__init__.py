"""Safetensors models on disk: read, write and validate them, and describe their layout.

Read: `Checkpoint`, `ModelPair`, `read_header`, `prefetching`, `BufferPool`; sources:
`TensorSource`, `LocalSource`, `ModelInput`; write: `ShardedWriter` in `atomic_output_dir`;
validate: `StreamingValidator`, header and pickle checks, `strictjson`; `Manifest`.
See docs/codecs.md, "Reading and writing models".
"""

from compress.tensorio import strictjson
from compress.tensorio.buffers import BufferPool
from compress.tensorio.checkpoint import (
    CONFIG_FILE,
    MODEL_CARD,
    Checkpoint,
    copy_config,
    ensure_finite,
    is_model_file,
)
from compress.tensorio.header import (
    DEFAULT_MAX_HEADER_BYTES,
    FLOAT_DTYPES,
    MAX_HEADER_BYTES,
    SAFETENSORS_DTYPES,
    TORCH_DTYPES,
    SafetensorsHeader,
    TensorEntry,
    header_from_dict,
    header_from_reader,
    header_to_dict,
    read_header,
)
from compress.tensorio.manifest import (
    Manifest,
    TensorSpec,
    manifest_from_headers,
    parse_weight_map,
    require_same_layout,
    shape_mismatches,
)
from compress.tensorio.pairs import ModelPair, TensorPair
from compress.tensorio.pickles import (
    PICKLE_SNIFF_BYTES,
    describe_pickle,
    describe_pickle_stream,
    pickle_refusal,
    refuse_pickle_name,
)
from compress.tensorio.prefetch import prefetching
from compress.tensorio.sources import (
    LocalSource,
    MappableSource,
    ModelInput,
    ReadAheadSource,
    TensorSource,
    advise_will_need,
    as_source,
    describe_model,
    map_range,
    read_range,
)
from compress.tensorio.streaming import StreamingValidator
from compress.tensorio.writer import (
    DEFAULT_MAX_SHARD_BYTES,
    PlannedTensor,
    ShardedWriter,
    atomic_output_dir,
    fsync_path,
    plan_for,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_SHARD_BYTES",
    "FLOAT_DTYPES",
    "MAX_HEADER_BYTES",
    "MODEL_CARD",
    "PICKLE_SNIFF_BYTES",
    "SAFETENSORS_DTYPES",
    "TORCH_DTYPES",
    "BufferPool",
    "Checkpoint",
    "LocalSource",
    "Manifest",
    "MappableSource",
    "ModelInput",
    "ModelPair",
    "PlannedTensor",
    "ReadAheadSource",
    "SafetensorsHeader",
    "ShardedWriter",
    "StreamingValidator",
    "TensorEntry",
    "TensorPair",
    "TensorSource",
    "TensorSpec",
    "advise_will_need",
    "as_source",
    "atomic_output_dir",
    "copy_config",
    "describe_model",
    "describe_pickle",
    "describe_pickle_stream",
    "ensure_finite",
    "fsync_path",
    "header_from_dict",
    "header_from_reader",
    "header_to_dict",
    "is_model_file",
    "manifest_from_headers",
    "map_range",
    "parse_weight_map",
    "pickle_refusal",
    "plan_for",
    "prefetching",
    "read_header",
    "read_range",
    "refuse_pickle_name",
    "require_same_layout",
    "shape_mismatches",
    "strictjson",
]
