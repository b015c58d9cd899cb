"""The data-set stages of a job attempt: scale distillation and quality evaluation.

Both codecs take local data files; a job's data sets are in the blob store, so each one
it names is fetched into the attempt's scratch directory first (sha256-checked; data sets
are at most MAX_DATASET_BYTES a file, small next to the models, which stay in the store
and are read in place). The digest pinned when the job was queued must still be the data
set's (checked in the transaction that lists the files): data deleted and pushed again
under the name is not what the job was asked for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from compress.bitdelta import DistillConfig, distill_bitdelta
from compress.progress import ProgressFn
from compress.quality import evaluate_quality
from compress.tensorio import TensorSource
from registry.adapters.quality import JSONObject
from registry.datasets.fetch import fetch_dataset_files
from registry.jobs.attempt import Context
from registry.jobs.params import DistillStage, EvaluateStage, PinnedDataset


def fetch_pinned(ctx: Context, pinned: PinnedDataset, scratch: Path) -> list[Path]:
    """The files of the data set `pinned` in `scratch/data/<name>/`."""
    return fetch_dataset_files(ctx.database, ctx.store, pinned.name,
                               scratch / "data" / pinned.name, digest=pinned.digest)


def distill(params: DistillStage, base: TensorSource, finetune: TensorSource, delta: Path,
            ctx: Context, scratch: Path, progress: ProgressFn) -> tuple[Path, JSONObject]:
    """The delta with distilled scales (a new directory beside `delta`), and its report."""
    calibration = fetch_pinned(ctx, params.dataset, scratch)
    out = delta.with_name(f"{delta.name}-distilled")
    config = DistillConfig(steps=params.steps, lr=params.lr, batch_size=params.batch_size,
                           seq_len=params.seq_len, seed=params.seed)
    report = distill_bitdelta(base, finetune, delta, calibration, out, config=config,
                              device=ctx.device, progress=progress)
    shutil.rmtree(delta, ignore_errors=True)
    return out, report.to_dict()


def evaluate(params: EvaluateStage, base: TensorSource, finetune: TensorSource,
             result: Path, ctx: Context, scratch: Path,
             progress: ProgressFn) -> JSONObject:
    """Losses, perplexities and gain kept of `result` on each of the job's data sets."""
    files = [path for pinned in params.datasets
             for path in fetch_pinned(ctx, pinned, scratch)]
    report = evaluate_quality(base, finetune, result, files, batch_size=params.batch_size,
                              seq_len=params.seq_len, max_batches=params.max_batches,
                              max_tokens=params.max_tokens, device=ctx.device,
                              progress=progress)
    found = report.to_dict()
    # Where the worker kept its compressed copy (under WORK_DIR) is none of a user's
    # business and changes with every attempt: `compressed_kind` says what was measured.
    del found["compressed"]
    return found
