"""Merge a PEFT adapter into its base with peft's own `merge_and_unload`, on disk.

Every check that needs no weights runs first (the adapter's config and safetensors header
against the base's manifest, pickles, unmergeable types), so a mismatch is refused before
the base is loaded. The merged model is written tensor by tensor into a scratch directory
that becomes `out` only once complete (`atomic_output_dir`).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compress.errors import CodecError, InvalidDelta, InvalidModel, OutputExists
from compress.filenames import ADAPTER_CONFIG, ADAPTER_WEIGHTS, CONFIG_FILE, TOKENIZER_FILES
from compress.peft.checks import PeftRecord, check_peft_against_base
from compress.peft.config import PROMPT_TYPES, peft_type_of
from compress.tensorio import (
    DEFAULT_MAX_SHARD_BYTES,
    SAFETENSORS_DTYPES,
    TORCH_DTYPES,
    Checkpoint,
    Manifest,
    PlannedTensor,
    ShardedWriter,
    atomic_output_dir,
    ensure_finite,
    pickle_refusal,
    read_header,
    strictjson,
)
from compress.tensorio.pickles import PICKLE_SUFFIXES

MODEL_STEM = "model"
MAX_ADAPTER_CONFIG_BYTES = 1 << 20
GENERATION_CONFIG = "generation_config.json"
# peft's task_type → the transformers class whose weights its keys name.
_AUTO_CLASSES = {"CAUSAL_LM": "AutoModelForCausalLM", "SEQ_CLS":
                 "AutoModelForSequenceClassification", "TOKEN_CLS":
                 "AutoModelForTokenClassification", "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
                 "QUESTION_ANS": "AutoModelForQuestionAnswering",
                 "FEATURE_EXTRACTION": "AutoModel"}


def unmergeable_message(peft_type: str) -> str:
    return (f"a {peft_type} adapter cannot be merged: it adds virtual tokens to the input "
            "and changes no weight of the base. Serve it with PEFT/transformers instead "
            "(PeftModel.from_pretrained(base, ADAPTER))")


@dataclass(frozen=True)
class PeftMergeReport:
    peft_type: str
    validated: bool  # whether deltahub checked its tensors against the base
    modules: int  # adapted modules merged (0 where deltahub does not know the type)
    tensors: int
    dtype: str
    files: list[str]
    bytes_out: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"peft_type": self.peft_type, "validated": self.validated,
                "modules": self.modules, "tensors": self.tensors, "dtype": self.dtype,
                "files": self.files, "bytes_out": self.bytes_out, "seconds": self.seconds}


def is_peft_adapter(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def check_mergeable(adapter: Path, base: Manifest) -> PeftRecord:
    """The adapter's record, once it is known to fit `base` and to be mergeable; no
    weights are read."""
    config_path = adapter / ADAPTER_CONFIG
    if not config_path.is_file():
        raise InvalidDelta(f"{adapter} has no {ADAPTER_CONFIG}; give a PEFT adapter directory")
    if config_path.stat().st_size > MAX_ADAPTER_CONFIG_BYTES:
        raise InvalidDelta(f"{config_path} is over {MAX_ADAPTER_CONFIG_BYTES} bytes; no "
                           "adapter config needs that")
    raw = strictjson.loads(config_path.read_bytes(), str(config_path))
    peft_type = peft_type_of(raw)
    if peft_type in PROMPT_TYPES:
        raise InvalidDelta(unmergeable_message(peft_type))
    weights = adapter / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickles = sorted(p.name for p in adapter.iterdir()
                         if p.name.lower().endswith(PICKLE_SUFFIXES))
        if pickles:
            raise pickle_refusal(pickles[0], "a pickle checkpoint and the adapter has no "
                                 f"{ADAPTER_WEIGHTS}")
        raise InvalidDelta(f"{adapter} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}")
    return check_peft_against_base(raw, read_header(weights).tensors, base)


def merge_peft(base: str | os.PathLike[str], adapter: str | os.PathLike[str],
               out: str | os.PathLike[str], *, device: str | torch.device = "cpu",
               max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> PeftMergeReport:
    """Write `base` with the PEFT adapter merged in (peft's `merge_and_unload`) as a
    safetensors model in the new directory `out`, with the base's config and tokenizer."""
    started = time.perf_counter()
    base_path, adapter_path, out_path = Path(base), Path(adapter), Path(out)
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        # atomic_output_dir refuses it too, but only after the base is loaded.
        raise OutputExists(f"{out_path} already exists and is not empty; choose a new "
                           "output path")
    if not base_path.is_dir():
        raise InvalidModel(f"{base_path} is not a directory; merging a PEFT adapter needs "
                           "the base as transformers loads it (config.json and weights)")
    with Checkpoint.open(base_path) as base_ckpt:
        manifest, config = base_ckpt.manifest, base_ckpt.config or {}
    if "quantization_config" in config:
        raise InvalidModel(f"{base_path} is a quantized base; merge into its full-precision "
                           "parent instead (merging into quantized weights loses the adapter)")
    record = check_mergeable(adapter_path, manifest)
    dtype = _float_dtype(manifest)
    state = _merged_state(base_path, adapter_path, record, dtype, torch.device(device))
    plan = _plan(manifest, state)
    with atomic_output_dir(out_path) as scratch:
        writer = ShardedWriter(scratch, plan, {"format": "pt"}, stem=MODEL_STEM,
                               max_shard_bytes=max_shard_bytes)
        try:
            for item in plan:
                tensor = state[item.name]
                ensure_finite(item.name, tensor, "the merged model")
                writer.write(item.name, tensor)
            files = writer.close()
        except BaseException:
            writer.abort()
            raise
        _copy_side_files(base_path, scratch)
        bytes_out = sum(f.stat().st_size for f in files if f.suffix == ".safetensors")
    peft = record.peft
    return PeftMergeReport(
        peft_type=str(peft["peft_type"]), validated=bool(peft.get("validated")),
        modules=int(record.params.get("module_count") or 0),
        tensors=len(plan), dtype=SAFETENSORS_DTYPES[dtype], files=[f.name for f in files],
        bytes_out=bytes_out, seconds=time.perf_counter() - started)


def _float_dtype(manifest: Manifest) -> torch.dtype:
    """The base's float dtype: that of most of its float parameters."""
    counts = Counter(spec.dtype for spec in manifest
                     if TORCH_DTYPES.get(spec.dtype, torch.int8).is_floating_point)
    if not counts:
        raise InvalidModel("the base has no float tensors to merge an adapter into")
    return TORCH_DTYPES[counts.most_common(1)[0][0]]


def _merged_state(base: Path, adapter: Path, record: PeftRecord, dtype: torch.dtype,
                  device: torch.device) -> dict[str, torch.Tensor]:
    import transformers
    from transformers.utils import logging as hf_logging

    try:
        from peft import PeftModel
    except ImportError as exc:
        raise CodecError(f"merging a PEFT adapter needs peft, which is not installed ({exc}):"
                         " pip install peft") from exc

    task = record.peft.get("task_type")
    auto = getattr(transformers, _AUTO_CLASSES.get(str(task), "AutoModelForCausalLM"))
    bars = hf_logging.is_progress_bar_enabled()
    # The CLI reports with its table, not their bars.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return _load_and_merge(auto, base, adapter, record, dtype, device, PeftModel)
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _load_and_merge(auto: Any, base: Path, adapter: Path, record: PeftRecord,
                    dtype: torch.dtype, device: torch.device, peft_model_class: Any
                    ) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        # peft and transformers warn about choices the adapter made (saved embeddings,
        # projections from a PRNG key); the merge is exact either way.
        warnings.simplefilter("ignore")
        model = auto.from_pretrained(base, **{_dtype_keyword(): dtype}).to(device)
        peft_model = peft_model_class.from_pretrained(model, adapter, is_trainable=False)
        try:
            merged = peft_model.merge_and_unload()
        except (ValueError, NotImplementedError, AttributeError, TypeError) as exc:
            raise InvalidDelta(f"peft cannot merge this {record.peft['peft_type']} adapter: "
                               f"{exc}") from exc
    return {name: tensor.detach() for name, tensor in merged.state_dict().items()}


def _dtype_keyword() -> str:
    """`dtype` since transformers 4.56, `torch_dtype` before (the bounds allow 4.40)."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _plan(manifest: Manifest, state: dict[str, torch.Tensor]) -> list[PlannedTensor]:
    """The base's tensors in the base's order (tied weights stay unwritten where the base
    has them so), then any tensor the adapter added that aliases none of them."""
    names = [spec.name for spec in manifest if spec.name in state]
    missing = [spec.name for spec in manifest if spec.name not in state]
    if missing:
        raise InvalidModel(f"the loaded base has no tensor {missing[0]!r}; transformers "
                           "does not load this base as the adapter's task class")
    written = {state[n].untyped_storage().data_ptr() for n in names}
    extra = [n for n, t in state.items() if n not in manifest
             and t.untyped_storage().data_ptr() not in written]
    return [PlannedTensor(n, SAFETENSORS_DTYPES[state[n].dtype], tuple(state[n].shape))
            for n in [*names, *extra]]


def _copy_side_files(base: Path, out: Path) -> None:
    for name in sorted({CONFIG_FILE, GENERATION_CONFIG, *TOKENIZER_FILES}):
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)
