"""The data-set options of a compression job: scale distillation and evaluation.

Checked when the job is asked for, so that a worker never spends an hour compressing only
to find a data set missing or unreadable: every named data set must exist and be final,
and text data needs a tokenizer.json on the base or the fine-tune (what the codecs
tokenize with). Each data set is recorded with its content digest: a data set is
immutable once final, but an admin may delete it and push other content under the same
name, and the worker then refuses to run on data the job was not asked for.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from compress.quality import TOKENIZER_FILE
from compress.tensorio import Manifest
from registry.datasets.service import get_final_dataset, needs_tokenizer
from registry.errors import InvalidJobParameters
from registry.jobs import footprint
from registry.jobs.params import DistillStage, EvaluateStage, PinnedDataset
from registry.jobs.schemas import CompressRequest
from registry.models.service import model_by_id
from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.tables import CompressMethod, Dataset, Model


def quality_params(session: Session, store: BlobStore, settings: Settings,
                   method: CompressMethod, request: CompressRequest, finetune: Model,
                   manifest: Manifest, targets: list[str]
                   ) -> tuple[DistillStage | None, EvaluateStage | None]:
    """`distill` and `evaluate` as the worker will run them (None when not asked), after
    checking that they fit the fine-tune and the job limits (registry/jobs/footprint.py)."""
    if request.distill is None and request.evaluate is None:
        return None, None
    data: dict[str, Dataset] = {}
    distill = evaluate = None
    if request.distill is not None:
        if method is not CompressMethod.BITDELTA:
            raise InvalidJobParameters(
                "distill trains BitDelta's scales; it does not apply to method=lora (leave "
                "it out, or use method=bitdelta)")
        distill = DistillStage(**{**request.distill.model_dump(), "dataset": _pinned(
            session, request.distill.dataset, finetune, data)})
    if request.evaluate is not None:
        names = request.evaluate.datasets
        if len(set(names)) != len(names):
            raise InvalidJobParameters("evaluate.datasets names a data set twice; name each "
                                       "once")
        evaluate = EvaluateStage(**{**request.evaluate.model_dump(), "datasets": [
            _pinned(session, name, finetune, data) for name in names]})
    footprint.check(settings, footprint.finetune_shape(store, finetune, manifest, targets),
                    distill, evaluate,
                    sum(f.size for dataset in data.values() for f in dataset.files))
    return distill, evaluate


def _pinned(session: Session, name: str, finetune: Model,
            fetched: dict[str, Dataset]) -> PinnedDataset:
    """The data set `name` with its digest, after checking it can be read; recorded in
    `fetched` (what the worker will fetch)."""
    dataset = fetched[name] = get_final_dataset(session, name)
    if needs_tokenizer(dataset) and not has_tokenizer(session, finetune):
        raise InvalidJobParameters(
            f"data set {name!r} holds text, and neither the fine-tune {finetune.name!r} nor "
            f"its base has a {TOKENIZER_FILE} to tokenize it with; add the model's "
            f"tokenizer files to either (`deltahub attach-tokenizer {finetune.name} DIR`, "
            f"or PUT /models/{finetune.name}/files/{TOKENIZER_FILE}; "
            "AutoTokenizer.from_pretrained(dir).save_pretrained(dir) writes them), or push "
            "the data pre-tokenized (.safetensors with input_ids)",
            name="MissingTokenizer")
    assert dataset.content_digest is not None  # final data sets have one
    return PinnedDataset(name=dataset.name, digest=dataset.content_digest)


def has_tokenizer(session: Session, finetune: Model) -> bool:
    assert finetune.base_id is not None
    base = model_by_id(session, finetune.base_id)
    return any(TOKENIZER_FILE in {f.filename for f in model.files} for model in (base, finetune))
