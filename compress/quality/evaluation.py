"""How much of a fine-tune a compressed model keeps, measured as next-token loss on data.

`evaluate_quality(base, finetune, compressed, data)` validates every input first, then
builds, scores and drops base, fine-tune and compressed model in turn (one resident at a
time). Deterministic: gain kept is exactly 1 for the fine-tune and 0 for the base on the CPU.
See docs/codecs.md, "Quality evaluation and shared model code".
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from compress.errors import IncompatibleModels, InvalidParameter
from compress.modeling.data import (
    DEFAULT_MAX_DATA_BYTES,
    DataKind,
    EvalData,
    check_vocabulary,
    data_kind,
    load_eval_data,
)
from compress.modeling.model import build_model, causal_lm_config, model_bytes
from compress.modeling.tokenizer import TextTokenizer, model_tokenizer
from compress.progress import ProgressFn, no_progress
from compress.quality.errors import NonFiniteLoss
from compress.quality.report import DatasetQuality, QualityReport, Score
from compress.quality.variants import Variant, open_variant
from compress.tensorio import Checkpoint, ModelInput, describe_model, shape_mismatches

DEFAULT_BATCH_SIZE = 4
DEFAULT_SEQ_LEN = 128
DEFAULT_MAX_BATCHES: int | None = None  # every row, within the token budget
# Predicted tokens scored per data set at most (2,048 rows of 128): a data set is scored
# whole up to this, and the report states the budget and what each set used.
DEFAULT_MAX_TOKENS = 262_144
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

TensorStream = Iterable[tuple[str, torch.Tensor]]


def evaluate_quality(
    base: ModelInput, finetune: ModelInput, compressed: str | os.PathLike[str],
    data: Sequence[str | os.PathLike[str]], *, tokenizer: TextTokenizer | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE, seq_len: int = DEFAULT_SEQ_LEN,
    max_batches: int | None = DEFAULT_MAX_BATCHES, dtype: str = "float32",
    device: str | torch.device = "cpu", max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
    progress: ProgressFn = no_progress, max_tokens: int | None = DEFAULT_MAX_TOKENS,
) -> QualityReport:
    """Score base, fine-tune and `compressed` on each of `data`; see docs/codecs.md.

    `data` are .txt, .jsonl or .safetensors files (compress/modeling/data.py); text is
    tokenized with `tokenizer`, by default the base's (else the fine-tune's)
    tokenizer.json. `seq_len` is the row length for text. Each data set is scored whole,
    in file order, up to `max_tokens` predicted tokens (None: no budget) and, when given,
    `max_batches` batches of `batch_size` rows; each set's report says how many rows and
    tokens it used and whether a bound cut it (`truncated`). `dtype` ("float32",
    "bfloat16", "float16") is what the models compute in. `progress(done, total, item)`
    counts batches, and is also called, without advancing, for each tensor read. Raises
    a CodecError subclass on bad input before running any model.
    """
    started = time.perf_counter()
    torch_dtype, target = _settings(batch_size, max_batches, dtype, device)
    if max_tokens is not None and max_tokens < 1:
        raise InvalidParameter(f"max tokens must be positive (or none: all), got {max_tokens}")
    bounds = _Bounds(None if max_batches is None else batch_size * max_batches, max_tokens)
    with Checkpoint.open(base) as base_ckpt, Checkpoint.open(finetune) as ft_ckpt:
        variant = open_variant(compressed, base_ckpt.manifest)
        mismatches = shape_mismatches(base_ckpt.manifest, ft_ckpt.manifest)
        if mismatches:
            raise IncompatibleModels("the fine-tune", mismatches)
        sets, truncated = _load_data(data, base_ckpt, ft_ckpt, tokenizer, seq_len, bounds,
                                     max_data_bytes)
        report = QualityReport(
            base=describe_model(base), finetune=describe_model(finetune),
            compressed=os.fspath(compressed), compressed_kind=variant.kind.value,
            batch_size=batch_size, max_batches=max_batches, dtype=dtype, device=str(target),
            max_tokens=max_tokens)
        runs = _runs(base_ckpt, ft_ckpt, variant)
        counter = _BatchCounter(progress, len(runs) * sum(
            math.ceil(s.rows.shape[0] / batch_size) for s in sets))
        scores: dict[str, list[Score]] = {}
        for label, (config, source, tensors) in runs.items():
            model = build_model(causal_lm_config(config, source),
                                counter.each_tensor(label, tensors()), dtype=torch_dtype,
                                device=target, source=source)
            report.resident_bytes = max(report.resident_bytes, model_bytes(model))
            scores[label] = [_score(model, s, batch_size, target, label, counter) for s in sets]
            # Freed here by reference counting, before the next model is built (a full
            # gc.collect() is slow once transformers is imported: docs/benchmarks.md).
            del model
    report.datasets = [
        DatasetQuality(name=s.name, rows=int(s.rows.shape[0]), seq_len=s.seq_len,
                       tokens=int(s.rows.shape[0]) * (s.seq_len - 1), base=scores["base"][i],
                       finetune=scores["finetune"][i], compressed=scores["compressed"][i],
                       truncated=truncated[i])
        for i, s in enumerate(sets)]
    report.seconds = time.perf_counter() - started
    return report


def mean_loss(model: torch.nn.Module, rows: torch.Tensor, batch_size: int,
              device: torch.device, on_batch: Callable[[], None] = lambda: None) -> float:
    """Mean next-token loss (nats) over every position after the first of every row."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, rows.shape[0], batch_size):
            batch = rows[start:start + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum")
            total += float(nll)
            count += batch[:, 1:].numel()
            on_batch()
    return total / count


def _score(model: torch.nn.Module, data_set: EvalData, batch_size: int,
           device: torch.device, label: str, counter: _BatchCounter) -> Score:
    embeddings = model.get_input_embeddings()  # type: ignore[operator]
    check_vocabulary(data_set.name, data_set.rows, int(embeddings.num_embeddings))
    loss = mean_loss(model, data_set.rows, batch_size, device,
                     lambda: counter.advance(f"{label}: {data_set.name}"))
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"the {label} model's loss on {data_set.name} is {loss}: its "
                            "weights hold values that overflow; if --dtype is float16, try "
                            "bfloat16 or float32")
    return Score(loss)


@dataclass(frozen=True)
class _Bounds:
    """What a data set is cut to: rows (max_batches × batch_size) and predicted tokens."""

    rows: int | None
    tokens: int | None

    def rows_at(self, row_len: int) -> int | None:
        """The most rows of `row_len` tokens scored (None: all); at least one."""
        by_tokens = None if self.tokens is None else max(1, self.tokens // (row_len - 1))
        found = [n for n in (self.rows, by_tokens) if n is not None]
        return min(found) if found else None


def _load_data(data: Sequence[str | os.PathLike[str]], base: Checkpoint, finetune: Checkpoint,
               tokenizer: TextTokenizer | None, seq_len: int, bounds: _Bounds,
               max_bytes: int) -> tuple[list[EvalData], list[bool]]:
    """Every data set as rows, checked, cut to `bounds`, and whether each was cut; text
    tokenized by the models' own tokenizer."""
    if not data:
        raise InvalidParameter("give at least one data file to evaluate on")
    if tokenizer is None and any(data_kind(path) is not DataKind.TOKENS for path in data):
        tokenizer = model_tokenizer(base.source, finetune.source)
    vocab = (base.config or {}).get("vocab_size")
    sets, cut = [], []
    for path in data:
        text = data_kind(path) is not DataKind.TOKENS
        # One row past the bound is read, so a cut is known rather than guessed.
        first = bounds.rows_at(seq_len) if text else bounds.rows
        found = load_eval_data(path, tokenizer=tokenizer, seq_len=seq_len,
                               max_rows=None if first is None else first + 1,
                               vocab_size=vocab if isinstance(vocab, int) else None,
                               max_bytes=max_bytes)
        keep = bounds.rows_at(found.seq_len)
        cut.append(keep is not None and found.rows.shape[0] > keep)
        sets.append(EvalData(found.name, found.kind, found.rows[:keep]))
    return sets, cut


class _BatchCounter:
    """Counts scored batches for the progress callback (which counts bytes elsewhere)."""

    def __init__(self, progress: ProgressFn, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def advance(self, item: str) -> None:
        self.done += 1
        self.progress(self.done, self.total, item)

    def each_tensor(self, label: str, tensors: TensorStream) -> TensorStream:
        """`tensors`, reporting each one read without advancing: a model of thousands of
        tensors takes a while to read, and every report is a point where the caller can
        stop the run (by raising)."""
        for name, tensor in tensors:
            self.progress(self.done, self.total, f"{label}: reading {name}")
            yield name, tensor


def _runs(base: Checkpoint, finetune: Checkpoint, variant: Variant
          ) -> dict[str, tuple[dict[str, Any] | None, str, Callable[[], TensorStream]]]:
    """For each model, in the order they are built: its config, its name, its tensors."""
    def stream(checkpoint: Checkpoint) -> Callable[[], TensorStream]:
        return lambda: ((name, checkpoint.finite_tensor(name))
                        for name in checkpoint.manifest.names)

    return {
        "base": (base.config, base.source.name, stream(base)),
        "finetune": (finetune.config, finetune.source.name, stream(finetune)),
        "compressed": (variant.config or base.config, str(variant.path),
                       lambda: variant.tensors(base)),
    }


def _settings(batch_size: int, max_batches: int | None, dtype: str,
              device: str | torch.device) -> tuple[torch.dtype, torch.device]:
    if batch_size < 1:
        raise InvalidParameter(f"batch size must be positive, got {batch_size}")
    if max_batches is not None and max_batches < 1:
        raise InvalidParameter(f"max batches must be positive (or none: all), got {max_batches}")
    if dtype not in DTYPES:
        raise InvalidParameter(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    try:
        target = torch.device(device)
    except RuntimeError as exc:
        raise InvalidParameter(f"unknown device {device!r} ({exc})") from exc
    return DTYPES[dtype], target
