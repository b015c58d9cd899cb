"""Rules for 4-bit bases: a bitsandbytes checkpoint registered as a base, read through
its logical shapes, linked to the full-precision base it was quantized from.

Validated from the safetensors headers, config.json and each weight's quant_state JSON
(a few hundred bytes each, read by range); no weight is loaded. See
docs/architecture.md, "4-bit bases".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from compress.errors import CodecError
from compress.tensorio import Manifest, TensorSpec, header_from_dict, shape_mismatches
from compress.tensorio.bnb4bit import (
    declared_quantization,
    logical_manifest,
    quantized_weights,
)
from registry.errors import IncompatibleBase, InvalidRequest, NotReady, from_codec_error
from registry.models.repository import ModelRepository
from registry.names import check_name
from registry.storage.base import BlobStore
from registry.tables import Model, ModelFile, ModelKind, Status


def parent_id(session: Session, kind: ModelKind, ref: str | None) -> int | None:
    """The id of the base a 4-bit base names as `quantized_from`: a full-precision base."""
    if ref is None:
        return None
    if kind is not ModelKind.BASE:
        raise InvalidRequest("only a base can be quantized from another base; omit "
                             "'quantized_from' for a finetune")
    from registry.models.service import not_found  # the service imports this module

    parent = ModelRepository(session).by_ref(check_name(ref, "model name"))
    if parent is None:
        raise not_found(session, ref, "base model", kind=ModelKind.BASE)
    if parent.kind is not ModelKind.BASE or parent.quantization is not None:
        what = "a finetune" if parent.kind is not ModelKind.BASE else "itself quantized"
        raise InvalidRequest(f"{ref!r} is {what}; 'quantized_from' names the "
                             "full-precision base the 4-bit checkpoint was quantized from")
    if parent.status is not Status.READY:  # so no draft ever hangs from another draft
        raise NotReady(f"base {parent.name!r} is not finalized yet; finalize it first")
    return parent.id


def apply_quantization(session: Session, store: BlobStore, model: Model, stored: Manifest,
                       config: Mapping[str, Any]) -> Manifest:
    """The manifest to record for `model`: its logical one if it is a 4-bit checkpoint
    (setting `model.quantization`, checked against its parent), else `stored`."""
    try:
        quantization = declared_quantization(stored, config)
        if quantization is None:
            if model.quantized_from_id is not None:
                raise InvalidRequest(
                    f"model {model.name!r} names a base it was quantized from, but its "
                    "config.json has no bitsandbytes 4-bit quantization_config; push a "
                    "4-bit checkpoint, or push without --quantized-from")
            return stored
        if model.kind is not ModelKind.BASE:
            raise InvalidRequest("a 4-bit checkpoint registers as a base (kind 'base', "
                                 "--quantized-from the full-precision base)")
        files = {f.filename: f for f in model.files}
        weights = quantized_weights(stored, quantization, _reader(store, files), config)
        manifest = logical_manifest(stored, weights)
    except CodecError as exc:
        raise from_codec_error(exc) from exc
    blocksizes = sorted({w.state.blocksize for w in weights.values()})
    model.quantization = quantization.to_dict(blocksizes[0] if len(blocksizes) == 1 else None)
    if model.quantized_from_id is not None:
        _check_against_parent(session, model, manifest)
    return manifest


def _reader(store: BlobStore, files: Mapping[str, ModelFile]) -> Any:
    def read(spec: TensorSpec) -> bytes:
        file = files[spec.file]
        assert file.header is not None
        header = header_from_dict(file.header)
        entry = header.tensors[spec.name]
        start = header.data_start + entry.start
        return store.read_bytes(file.sha256, start, start + entry.nbytes)

    return read


def _check_against_parent(session: Session, model: Model, manifest: Manifest) -> None:
    assert model.quantized_from_id is not None
    parent = ModelRepository(session).by_id(model.quantized_from_id, full=True)
    if parent is None or parent.status is not Status.READY or parent.manifest is None:
        raise NotReady(f"the base {model.name!r} was quantized from is not finalized yet; "
                       "finalize it first")
    problems = shape_mismatches(Manifest.from_dict(parent.manifest), manifest)
    if problems:
        raise IncompatibleBase(
            f"4-bit base {model.name!r} does not have the logical shapes of {parent.name!r}, "
            "the base it names as quantized from: " + "; ".join(problems[:20]),
            mismatches=problems)


# How an adapter in a compatible listing relates to the base asked for.
SAME_BASE, PARENT, FOUR_BIT_VARIANT = "same base", "quantized from", "4-bit variant"


def family(session: Session, base_id: int) -> dict[int, str]:
    """The bases whose adapters fit `base_id` (the same logical shapes, checked at
    finalize), each with how it relates to it: itself, the base it was quantized from,
    or the 4-bit bases quantized from it."""
    repo = ModelRepository(session)
    parent = repo.quantized_from_of(base_id)
    related = ({parent: PARENT} if parent is not None
               else dict.fromkeys(repo.quantized_children(base_id), FOUR_BIT_VARIANT))
    return related | {base_id: SAME_BASE}
