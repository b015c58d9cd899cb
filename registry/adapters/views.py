"""Adapters as the API and the pages show them, each with its base's and source's names:
looked up in one query for a lot of `Adapter`s; listing rows carry them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.orm import Session

from registry.adapters.rows import AdapterRow
from registry.adapters.schemas import AdapterOut
from registry.models.service import model_names
from registry.tables import Adapter


def adapter_outs(session: Session, adapters: Sequence[Adapter], *,
                 summary: bool = False) -> list[AdapterOut]:
    """`summary`: each quality cut to its top-level figures, as listings show it."""
    names = model_names(session, [*(a.base_id for a in adapters),
                                  *(a.source_model_id for a in adapters)])
    return [AdapterOut.of(a, names[a.base_id],
                          names.get(a.source_model_id) if a.source_model_id else None,
                          summary=summary)
            for a in adapters]


def adapter_out(session: Session, adapter: Adapter) -> AdapterOut:
    return adapter_outs(session, [adapter])[0]


def row_outs(rows: Sequence[AdapterRow], *, summary: bool = False,
             relations: Mapping[int, str] | None = None) -> list[AdapterOut]:
    """A listing's rows (which carry their models' names: no statement here).

    `summary`: as `adapter_outs`. `relations` (a compatible listing): base id -> how
    that base relates to the one asked for, shown as each item's `compatible_via`."""
    outs = [AdapterOut.of(row, row.base_name, row.source_name, summary=summary)
            for row in rows]
    if relations is not None:
        for out, row in zip(outs, rows, strict=True):
            out.compatible_via = relations.get(row.base_id)
    return outs
