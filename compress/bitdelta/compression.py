"""Compress a full fine-tune into a BitDelta delta over its base, as a stream.

`compress_bitdelta(base, finetune, out)` checks the layouts match, writes the header first
(tensors stored whole are compared before any data), then reads, encodes and appends each
compressed weight with a reader thread one pair ahead. Nothing appears at `out` unless the
whole run succeeds. See docs/codecs.md, "BitDelta compression".
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch

from compress.bitdelta.codec import EncoderPool, compress_pair, encoder_pool
from compress.bitdelta.format import (
    DELTA_STEM,
    REPORT_FILE,
    CompressedSpec,
    ScaleMode,
    bits_key,
    bits_shape,
    delta_metadata,
    scale_key,
    scale_shape,
)
from compress.bitdelta.report import BitDeltaReport, TensorReport
from compress.errors import InvalidModel
from compress.progress import ProgressCounter, ProgressFn, no_progress
from compress.targets import (
    DEFAULT_TARGET_MODULES,
    TargetSpec,
    module_name,
    select_linear_weights,
)
from compress.tensorio import (
    DEFAULT_MAX_SHARD_BYTES,
    FLOAT_DTYPES,
    BufferPool,
    ModelInput,
    ModelPair,
    PlannedTensor,
    ShardedWriter,
    atomic_output_dir,
    copy_config,
    describe_model,
    prefetching,
)


def compress_bitdelta(
    base: ModelInput, finetune: ModelInput, out: str | os.PathLike[str], *,
    scale: ScaleMode | str = ScaleMode.ROW,
    targets: TargetSpec = DEFAULT_TARGET_MODULES, device: str | torch.device = "cpu",
    progress: ProgressFn = no_progress, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    workers: int | None = None,
) -> BitDeltaReport:
    """Write the BitDelta delta of `finetune` over `base` to the new directory `out`.

    `base` and `finetune` are paths or TensorSources (e.g. the registry's stored blobs);
    `targets` picks the linear weights to compress (PEFT target_modules rules); `scale` is
    "row" (one α per output row) or "tensor" (one per matrix); `device` runs the
    arithmetic there ("cuda") while reading and writing stay on the host; on the CPU,
    `workers` single-threaded encoder threads share each matrix (default: torch's thread
    count less one, left to the reader thread). Returns the report, also saved as `out/report.json`.
    """
    mode = ScaleMode.parse(scale)
    target = torch.device(device)
    started = time.perf_counter()
    with ModelPair.open(base, finetune) as pair, atomic_output_dir(Path(out)) as scratch:
        compressed = _compressed_specs(pair, targets)
        tracker = ProgressCounter(progress, pair.finetune_bytes)
        changed, omitted = _scan_uncompressed(pair, set(compressed), tracker)
        jobs = _jobs(pair, compressed, changed)
        writer = ShardedWriter(
            scratch, [p for job in jobs for p in _planned(job, mode)],
            delta_metadata(base_digest=pair.base.manifest.digest(),
                           finetune_digest=pair.finetune.manifest.digest(), mode=mode,
                           compressed=list(compressed.values())),
            stem=DELTA_STEM, max_shard_bytes=max_shard_bytes)
        # On the CPU, local files are mapped: the encoder's threads read the page cache
        # themselves, and the reader thread only reads what is stored whole.
        mapping = target.type == "cpu" and pair.base.can_map and pair.finetune.can_map
        try:
            with encoder_pool(workers, beside_reader=not mapping) as pool:
                tensors = _stream(pair, jobs, writer, mode, target,
                                  pool if target.type == "cpu" else None, tracker,
                                  (describe_model(base), describe_model(finetune)), mapping)
            files = writer.close()
        except BaseException:
            writer.abort()
            raise
        copy_config([pair.finetune.source], scratch)  # so a merge writes a loadable model
        report = BitDeltaReport(
            scale_mode=mode, tensors=tensors, omitted=omitted,
            bytes_in=pair.finetune.total_bytes,
            bytes_out=sum(f.stat().st_size for f in files if f.suffix == ".safetensors"),
            seconds=time.perf_counter() - started, files=[f.name for f in files])
        (scratch / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


# A tensor stored whole up to this size (norms, biases; not embeddings) is read ahead
# without waiting for room: a model's many small tensors together stay small.
_LIGHT_BYTES = 1 << 20


@dataclass(frozen=True)
class _Job:
    """One fine-tune tensor to put in the delta: compressed (`spec` set) or stored whole."""

    name: str
    dtype: str  # the fine-tune's
    shape: tuple[int, ...]
    nbytes: int  # the fine-tune tensor's
    spec: CompressedSpec | None


def _compressed_specs(pair: ModelPair, targets: TargetSpec) -> dict[str, CompressedSpec]:
    """Weight name -> spec of every weight to compress, refusing non-float ones."""
    specs: dict[str, CompressedSpec] = {}
    problems: list[str] = []
    for name in select_linear_weights(pair.base.manifest, targets):
        base_dtype, ft = pair.base.manifest[name].dtype, pair.finetune.manifest[name]
        if base_dtype not in FLOAT_DTYPES or ft.dtype not in FLOAT_DTYPES:
            problems.append(f"{name!r} ({base_dtype} in the base, {ft.dtype} in the fine-tune)")
            continue
        n, k = ft.shape
        specs[name] = CompressedSpec(module_name(name), (n, k), ft.dtype)
    if problems:
        raise InvalidModel("BitDelta compresses floating-point weights; these target weights "
                           f"are not: {'; '.join(problems[:20])}. Leave them out of the targets")
    return specs


def _scan_uncompressed(pair: ModelPair, compressed: set[str], tracker: ProgressCounter
                       ) -> tuple[set[str], list[str]]:
    """The tensors not compressed: which changed (stored), which did not (omitted)."""
    changed: set[str] = set()
    omitted: list[str] = []
    for name in pair.names:
        if name in compressed:
            continue
        if pair.read(name).changed:  # refuses NaN and Inf, naming the tensor
            changed.add(name)
        else:
            omitted.append(name)
        tracker.advance(pair.finetune_nbytes(name), name)
    return changed, omitted


def _jobs(pair: ModelPair, compressed: dict[str, CompressedSpec], changed: set[str]
          ) -> list[_Job]:
    jobs = []
    for name in pair.names:  # name order, so a delta's layout does not depend on sharding
        if name in compressed or name in changed:
            ft = pair.finetune.manifest[name]
            jobs.append(_Job(name, ft.dtype, ft.shape, pair.finetune_nbytes(name),
                             compressed.get(name)))
    return jobs


def _planned(job: _Job, mode: ScaleMode) -> list[PlannedTensor]:
    if job.spec is None:
        return [PlannedTensor(job.name, job.dtype, job.shape)]
    n, k = job.spec.shape
    return [PlannedTensor(bits_key(job.spec.module), "I32", bits_shape(n, k)),
            PlannedTensor(scale_key(job.spec.module), "F32", scale_shape(mode, n))]


def _read_jobs(pair: ModelPair, jobs: list[_Job], buffers: BufferPool, mapping: bool
               ) -> Iterator[tuple[_Job, torch.Tensor | None, torch.Tensor]]:
    """Runs on the reader thread, into `buffers` that `_stream` gives back once a job is
    written. Stored tensors were checked finite by the scan. With `mapping`, weights to
    compress are mapped, not read (`_mapped_pair`).

    Each job's read first asks for the next job's bytes ahead (`will_need`): from a cold
    local disk, the device then streams job k+1 while job k is copied out of the page
    cache (or encoded from it), instead of idling between synchronous reads.
    """
    for i, job in enumerate(jobs):
        if i + 1 < len(jobs):
            _hint(pair, jobs[i + 1])
        mapped = _mapped_pair(pair, job) if mapping else None
        if mapped is not None:
            yield job, *mapped
            continue
        base = None
        if job.spec is not None:
            base = pair.base.tensor(job.name, buffers.take(pair.base.entry(job.name).nbytes))
        # A light tensor gets its own small memory: from the pool it could take a large
        # free buffer, and the next large tensor would then need a new one.
        buffer = None if _is_light(job) else buffers.take(job.nbytes)
        yield job, base, pair.finetune.tensor(job.name, buffer)


def _mapped_pair(pair: ModelPair, job: _Job) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A weight to compress, mapped in both models (None if either cannot be)."""
    if job.spec is None:
        return None
    base, finetune = pair.base.mapped_tensor(job.name), pair.finetune.mapped_tensor(job.name)
    return None if base is None or finetune is None else (base, finetune)


def _is_light(job: _Job) -> bool:
    return job.spec is None and job.nbytes <= _LIGHT_BYTES


def _hint(pair: ModelPair, job: _Job) -> None:
    if job.spec is not None:
        pair.base.will_need(job.name)
    pair.finetune.will_need(job.name)


def _stream(pair: ModelPair, jobs: list[_Job], writer: ShardedWriter, mode: ScaleMode,
            device: torch.device, pool: EncoderPool | None, tracker: ProgressCounter,
            where: tuple[str, str], mapping: bool) -> list[TensorReport]:
    reports: list[TensorReport] = []
    # Reused read buffers (less reader CPU than fresh tensors, compress/tensorio/buffers.py):
    # the pair being encoded and the one the reader holds ahead of it, so as much memory
    # as fresh tensors took.
    buffers = BufferPool()
    # Tensors stored whole that are small (norms, biases) do not hold up the reader.
    with prefetching(_read_jobs(pair, jobs, buffers, mapping),
                     light=lambda item: _is_light(item[0])) as items, _WriteBehind(writer) as out:
        for job, base, finetune in items:
            if job.spec is None or base is None:
                out.write([(job.name, finetune)], then=functools.partial(buffers.give_back,
                                                                         finetune))
                reports.append(TensorReport(job.name, "full", job.shape, job.dtype,
                                            job.nbytes, job.nbytes))
                continue
            encoded = compress_pair(base.to(device), finetune.to(device), mode, job.name, where,
                                    pool)
            buffers.give_back(base)  # done with both: the reader may fill them again (a
            buffers.give_back(finetune)  # mapped tensor is not the pool's: ignored)
            del base, finetune  # a mapped pair is unmapped here
            out.write([(bits_key(job.spec.module), encoded.bits),
                       (scale_key(job.spec.module), encoded.scale)])
            out_bytes = encoded.bits.nbytes + encoded.scale.nbytes
            reports.append(TensorReport(job.name, "bitdelta", job.shape, job.dtype, job.nbytes,
                                        out_bytes, encoded.delta_sq, encoded.error_sq,
                                        encoded.finetune_sq))
            tracker.advance(job.nbytes, job.name)
    return reports


class _WriteBehind:
    """The delta's writes on a thread of their own, one job behind the encoder: writing
    a job's output (a copy into the page cache, ~1/16 of its input) then overlaps
    encoding the next, instead of idling the encoder's threads. Writes keep their order;
    at most one job's waits, and its error is raised at the next write or at the end."""

    def __init__(self, writer: ShardedWriter) -> None:
        self._writer = writer
        self._thread = ThreadPoolExecutor(1, "deltahub-write")
        self._pending: Future[None] | None = None

    def write(self, tensors: list[tuple[str, torch.Tensor]],
              then: Callable[[], None] | None = None) -> None:
        """Write `tensors` in order, then call `then` (e.g. give a read buffer back)."""
        self._wait()
        self._pending = self._thread.submit(self._write, tensors, then)

    def _write(self, tensors: list[tuple[str, torch.Tensor]],
               then: Callable[[], None] | None) -> None:
        for name, tensor in tensors:
            self._writer.write(name, tensor)
        if then is not None:
            then()

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> _WriteBehind:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self._wait()  # its error is the one to raise
        finally:
            self._thread.shutdown(wait=True)  # after a failure: nothing writes on
