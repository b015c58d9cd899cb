"""What one attempt at a job does: read the models, run the codec, verify, register.

The codecs stay pure (paths or sources in, files out): this module opens their inputs in
the store (ranged reads, no download), hands them a progress callback that is also the
attempt's cancellation point, and sends their output through the same write protocol as
a push.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from compress.bitdelta import REPORT_FILE as BITDELTA_REPORT
from compress.bitdelta import compress_bitdelta, is_delta_file, verify_delta
from compress.errors import CodecError
from compress.lora import REPORT_FILE as LORA_REPORT
from compress.lora import SPECTRA_FILE, extract_lora, is_adapter_file
from compress.progress import ProgressFn
from compress.tensorio import TensorSource
from registry.infra.scratch import disk_full_named
from registry.jobs import quality_stage, queue
from registry.jobs.attempt import Context, Control
from registry.jobs.inputs import open_model
from registry.jobs.layer_rows import codec_layers, verify_layers
from registry.tables import AdapterKind, CompressMethod
from registry.uploads.flow import store_file
from registry.uploads.pipeline import UploadResult
from registry.uploads.rules import adapter_file_rule

log = logging.getLogger("deltahub.worker")

_REPORT_FILES = {BITDELTA_REPORT, LORA_REPORT, SPECTRA_FILE}
# Which output files make up each kind of adapter: the formats' own rule, as for a push.
_BELONGS = {AdapterKind.BITDELTA: is_delta_file, AdapterKind.LORA: is_adapter_file}
# Progress is written at most this often: each write is a fenced UPDATE.
_PROGRESS_EVERY_SECONDS = 0.5


# Test hook (tests/registry/jobs/test_failures.py): kill or pause this worker process at a
# named point of an attempt, for failures that no timing from outside can hit, such as
# between the blob commit and the database commit. DELTAHUB_FAULT_CRASH_AT=<point> sends
# SIGKILL, DELTAHUB_FAULT_STOP_AT=<point> SIGSTOP (a worker paused past its lease; the
# test resumes it with SIGCONT). Points: "reading" (between opening the two models),
# "compressing" and "verifying" (the codec's first progress call), "uploading" (after
# the first output file is committed), "committed" (every output blob committed, the
# completing transaction not begun). Each fires once per process. Unset, as always
# outside tests, a point costs two dictionary lookups.
_FAULT_SIGNALS = {"DELTAHUB_FAULT_CRASH_AT": signal.SIGKILL,
                  "DELTAHUB_FAULT_STOP_AT": signal.SIGSTOP}
_faults_fired: set[str] = set()


def _fault_point(point: str, job_id: int) -> None:
    for variable, signum in _FAULT_SIGNALS.items():
        if os.environ.get(variable) == point and variable not in _faults_fired:
            _faults_fired.add(variable)
            log.warning("fault injection: %s at %r in job %d", signum.name, point, job_id)
            os.kill(os.getpid(), signum)


class QualityBelowThreshold(CodecError):
    """The measured error exceeds the job's `max_error`."""


def run_attempt(claimed: queue.ClaimedJob, ctx: Context, control: Control) -> int:
    """Run the job to its registered adapter's id; raises on any failure."""
    scratch = ctx.work_dir / f"job-{claimed.lease.job_id}-{claimed.lease.attempt}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with disk_full_named(Path(ctx.settings.WORK_DIR), scratch):
            scratch.mkdir(parents=True)
            return _run(claimed, ctx, control, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(claimed: queue.ClaimedJob, ctx: Context, control: Control, scratch: Path) -> int:
    """The attempt's stages, each writing under `scratch`."""
    report = _Reporter(claimed, ctx, control)
    report.stage("reading", 0.0)
    base = open_model(ctx.database, ctx.store, claimed.base_id, control.checkpoint)
    _fault_point("reading", claimed.lease.job_id)
    finetune = open_model(ctx.database, ctx.store, claimed.model_id, control.checkpoint)
    spans = _stage_spans(claimed)
    out = scratch / "out"
    codec_report = _encode(claimed, base, finetune, out, ctx,
                           report.callback("compressing", *spans["compressing"]))
    distilled = None
    if "distill" in claimed.params:
        out, distilled = quality_stage.distill(
            claimed.params["distill"], base, finetune, out, ctx, scratch,
            report.callback("distilling", *spans["distilling"]))
    verified = _verify(claimed, base, finetune, out, ctx, report, spans["verifying"])
    evaluated = None
    if "evaluate" in claimed.params:
        evaluated = quality_stage.evaluate(
            claimed.params["evaluate"], base, finetune, out, ctx, scratch,
            report.callback("evaluating", *spans["evaluating"]))
    quality = _quality(claimed, codec_report, verified, distilled, evaluated)
    _check_max_error(claimed, quality)
    report.stage("uploading", 0.95)
    files = _upload(claimed, out, ctx, control)
    _fault_point("committed", claimed.lease.job_id)
    control.checkpoint()
    with ctx.database.writing() as session:
        return queue.complete(session, claimed.lease, claimed, ctx.store, ctx.settings,
                              files, quality)


# Rough shares of an attempt's time, for a progress bar that moves evenly: encoding reads
# both models once; distillation runs a model per step; verification reads them again;
# evaluation runs three models over the data.
_STAGE_WEIGHTS = {"compressing": 6.0, "distilling": 4.0, "verifying": 2.5, "evaluating": 2.5}


def _stage_spans(claimed: queue.ClaimedJob) -> dict[str, tuple[float, float]]:
    """Each stage's (start, span) of the progress bar between reading and uploading."""
    params = claimed.params
    runs = {"compressing": True, "distilling": "distill" in params,
            "verifying": claimed.method is CompressMethod.BITDELTA and params["verify"] != "off",
            "evaluating": "evaluate" in params}
    total = sum(w for stage, w in _STAGE_WEIGHTS.items() if runs[stage])
    spans, start = {}, 0.1
    for stage, weight in _STAGE_WEIGHTS.items():
        span = 0.85 * weight / total if runs[stage] else 0.0
        spans[stage] = (start, span)
        start += span
    return spans


class _Reporter:
    """Throttled, fenced progress writes; each call is also a cancellation point."""

    def __init__(self, claimed: queue.ClaimedJob, ctx: Context, control: Control) -> None:
        self.claimed, self.ctx, self.control = claimed, ctx, control
        self._last = 0.0
        self._stage = ""

    def stage(self, stage: str, fraction: float, message: str | None = None,
              force: bool = True) -> None:
        self.control.checkpoint()
        now = time.monotonic()
        # A new stage is always written, so a fast job still shows each one it went through.
        if not force and stage == self._stage and now - self._last < _PROGRESS_EVERY_SECONDS:
            return
        self._last, self._stage = now, stage
        with self.ctx.database.writing() as session:
            cancel = queue.report_progress(session, self.claimed.lease, fraction, stage,
                                           message)
        if cancel:
            self.control.cancel.set()
            self.control.checkpoint()

    def callback(self, stage: str, start: float, span: float) -> ProgressFn:
        """A codec progress callback mapping its bytes onto [start, start + span]."""
        def progress(done: int, total: int, item: str) -> None:
            share = done / total if total else 1.0
            self.stage(stage, start + span * share, item, force=False)
            _fault_point(stage, self.claimed.lease.job_id)
        return progress


def _encode(claimed: queue.ClaimedJob, base: TensorSource, finetune: TensorSource, out: Path,
            ctx: Context, progress: ProgressFn) -> dict[str, Any]:
    params = claimed.params
    if claimed.method is CompressMethod.BITDELTA:
        result = compress_bitdelta(base, finetune, out, scale=params["scale_mode"],
                                   targets=params["targets"], device=ctx.device,
                                   progress=progress)
        return result.to_dict()
    lora = extract_lora(base, finetune, out, rank=params.get("rank"),
                        target_error=params.get("target_error"),
                        max_rank=params.get("max_rank"), targets=params["targets"],
                        targets_only=_targets_only(params),
                        base_model_name_or_path=f"deltahub:model/{claimed.base_id}",
                        device=ctx.device, progress=progress)
    return lora.to_dict()


def _targets_only(params: dict[str, Any]) -> bool:
    """A job queued before carrying non-targets became the default recorded save_modules
    instead; it runs as it was asked to."""
    if "targets_only" in params:
        return bool(params["targets_only"])
    return not params.get("save_modules", False)


def _verify(claimed: queue.ClaimedJob, base: TensorSource, finetune: TensorSource, out: Path,
            ctx: Context, report: _Reporter,
            span: tuple[float, float]) -> dict[str, Any] | None:
    """BitDelta: the fused kernel (Triton on a GPU, the reference on a CPU) against the
    fine-tune's own layer outputs. LoRA: its factors' errors were measured as stored."""
    if claimed.method is not CompressMethod.BITDELTA or claimed.params["verify"] == "off":
        return None
    device = "cuda" if claimed.params["verify"] == "gpu" else ctx.device
    result = verify_delta(base, finetune, out, device=device,
                          progress=report.callback("verifying", *span))
    full = result.to_dict()
    summary: dict[str, Any] = full["summary"]
    if not result.ok:
        raise KernelDisagrees(
            f"the kernel disagreed with the reference on {summary['kernel_failures']}; "
            "the delta was not registered")
    return {**summary, "layers": verify_layers(full)}


class KernelDisagrees(CodecError):
    """Verification found the kernel's output differs from the fp32 reference."""


def _quality(claimed: queue.ClaimedJob, codec: dict[str, Any], verified: dict[str, Any] | None,
             distilled: dict[str, Any] | None,
             evaluated: dict[str, Any] | None) -> dict[str, Any]:
    """The adapter's quality: headline figures at the top (listings show those), the
    codec's summary, the distillation, the verification and the evaluation below."""
    headline: dict[str, Any] = {"source": "deltahub job", "job": claimed.lease.job_id,
                                "method": claimed.method.value}
    details = {k: v for k, v in codec.items()
               if k not in ("tensors", "modules", "files", "saved", "left_out",
                            "unchanged_targets", "omitted")}
    if evaluated is not None:
        headline["gain_kept"] = evaluated["gain_kept"]  # on the first data set
        headline["gain_kept_on"] = claimed.params["evaluate"]["datasets"][0]["name"]
    if distilled is not None:
        headline.update(distilled=True, distill_loss_initial=distilled.get("initial_loss"),
                        distill_loss_final=distilled.get("final_loss"))
    if verified is not None:
        headline.update(output_rel_error_max=verified["compression_rel_error_max"],
                        output_rel_error_mean=verified["compression_rel_error_mean"],
                        verified_with=f"{verified['backend']} on {verified['device']}")
    elif claimed.method is CompressMethod.LORA:
        summary = codec.get("summary", {})
        headline.update(weight_rel_error_max=summary.get("max_error"),
                        weight_rel_error_mean=summary.get("mean_error"),
                        verified_with="factor errors measured as stored")
    return {**headline, "codec": details, "distillation": distilled, "verify": verified,
            "evaluation": evaluated, **codec_layers(codec)}


def _check_max_error(claimed: queue.ClaimedJob, quality: dict[str, Any]) -> None:
    limit = claimed.params.get("max_error")
    measured = quality.get("output_rel_error_max", quality.get("weight_rel_error_max"))
    if limit is not None and measured is not None and measured > limit:
        raise QualityBelowThreshold(
            f"the worst relative error measured is {measured:.4g}, over max_error={limit}; "
            "nothing was registered. Raise max_error, or use a higher rank or BitDelta")


def _upload(claimed: queue.ClaimedJob, out: Path, ctx: Context,
            control: Control) -> list[tuple[str, UploadResult]]:
    """Each output file the adapter kind takes, staged, validated and committed."""
    kind = AdapterKind(claimed.method.value)
    uploaded = []
    for path in sorted(p for p in out.iterdir() if p.is_file()):
        # The codec's report goes into `quality`, not into the files: it carries timings,
        # and identical weights must make identical content (one version, not two).
        if path.name in _REPORT_FILES or not _BELONGS[kind](path.name):
            continue
        control.checkpoint()
        rule = adapter_file_rule(kind, path.name, ctx.settings)
        uploaded.append((path.name, store_file(ctx.store, path, rule)))
        _fault_point("uploading", claimed.lease.job_id)
    return uploaded
