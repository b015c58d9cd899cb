"""An adapter's evaluation and distillation as its page shows them.

The figures are read once, leniently, into the adapter's `Quality`
(registry/adapters/quality.py); this module cuts them to what a page shows and adds the
data set a job pinned, from the job's options recorded with the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from registry.adapters.quality import EvaluatedSet, Quality
from registry.jobs.params import BitDeltaParams, JobParams, parse_params
from registry.tables import CompressMethod

# What the adapter page says gain kept is: docs/architecture.md ("Gain kept") at length.
GAIN_KEPT_MEANING = (
    "Gain kept = (base loss − compressed loss) / (base loss − fine-tune loss): the share of "
    "the fine-tune's change in loss that the compressed adapter keeps, that is how much it "
    "keeps the fine-tune's behaviour (1.000 all of it, 0 none: it behaves as the base). "
    "Each data set says which way the fine-tune moved the loss: where it improved, higher "
    "is better; where it regressed (e.g. off its domain), higher keeps more of the "
    "regression and 0 recovers the base. Where it changed the loss by under 0.001 nats per "
    "token the figure is undefined (–). The headline, which listings rank by, is the first "
    "data set's, and only when the fine-tune improved it.")
MAX_ROWS = 64  # a report names at most 8 data sets; a pushed one may claim more


def evaluation(quality: Quality | None) -> list[EvaluatedSet]:
    """One row per evaluated data set (the first is the headline)."""
    if quality is None or quality.evaluation is None:
        return []
    return list(quality.evaluation.datasets[:MAX_ROWS])


def evaluation_bound(quality: Quality | None) -> str:
    """What the evaluation's data sets were cut to (the token budget), in words."""
    found = quality.evaluation if quality is not None else None
    return found.bound() if found is not None else ""


@dataclass(frozen=True)
class Distillation:
    initial_loss: float | None
    final_loss: float | None
    steps: int | None
    lr: float | None
    dataset: str | None  # the registered data set the job pinned, when a job made it
    calibration: list[str]  # its files as used: "name (rows × seq_len tokens)"


def distillation(quality: Quality | None, kind: str,
                 params: Mapping[str, object]) -> Distillation | None:
    """The distillation as a summary; None when the adapter was not distilled."""
    found = quality.distillation if quality is not None else None
    if found is None:
        return None
    return Distillation(found.initial_loss, found.final_loss, found.steps, found.lr,
                        _pinned(kind, params), list(found.calibration[:MAX_ROWS]))


def job_params(kind: str, params: Mapping[str, object]) -> JobParams | None:
    """The options of the job that made the adapter: a job's adapter records them under
    params.codec (registry/jobs/queue.py). None for a pushed adapter."""
    codec = params.get("codec")
    if not isinstance(codec, dict):
        return None
    try:
        return parse_params(CompressMethod(kind), codec)
    except (ValidationError, ValueError):
        return None  # a page shows what it can


def _pinned(kind: str, params: Mapping[str, object]) -> str | None:
    """The data set a job distilled on."""
    job = job_params(kind, params) if kind == CompressMethod.BITDELTA.value else None
    return job.distill.dataset.name if isinstance(job, BitDeltaParams) and job.distill else None
