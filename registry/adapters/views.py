"""Adapters as the API and the pages show them: each with its base's and source's names,
looked up in one query for the lot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.orm import Session

from registry.adapters.schemas import AdapterOut
from registry.models.service import model_names
from registry.tables import Adapter


def adapter_outs(session: Session, adapters: Sequence[Adapter], *, summary: bool = False,
                 relations: Mapping[int, str] | None = None) -> list[AdapterOut]:
    """`summary`: each quality cut to its top-level figures, as listings show it.
    `relations` (a compatible listing): base id -> how that base relates to the one asked
    for, shown as each item's `compatible_via`."""
    names = model_names(session, [*(a.base_id for a in adapters),
                                  *(a.source_model_id for a in adapters)])
    outs = [AdapterOut.of(a, names, summary=summary) for a in adapters]
    if relations is not None:
        for out, adapter in zip(outs, adapters, strict=True):
            out.compatible_via = relations.get(adapter.base_id)
    return outs


def adapter_out(session: Session, adapter: Adapter) -> AdapterOut:
    return adapter_outs(session, [adapter])[0]
