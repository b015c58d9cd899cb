"""Safetensors models on disk: read, write and validate them, and describe their layout.

- read: `Checkpoint` (one tensor at a time, positioned reads), `ModelPair` (a base and its
  fine-tune, checked to match), `read_header`, `prefetching` (a reader thread ahead),
  `BufferPool` (read buffers reused from tensor to tensor);
- sources: `TensorSource`, what every reader reads a model through (file names, sizes,
  positioned reads), `LocalSource` over a path (which can also read ahead,
  `ReadAheadSource`); a `ModelInput` is a path or a source;
- write: `ShardedWriter` (tensor by tensor, sharded past a size) inside
  `atomic_output_dir` (nothing appears unless the whole run succeeds);
- validate: `StreamingValidator` (chunk by chunk, as an upload arrives), the header and
  pickle checks it is made of, and `strictjson` (JSON a client sent);
- manifest: `Manifest`, every tensor's name, dtype, shape and file, with its digest.
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
