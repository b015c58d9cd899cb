"""Adapters as the API and the pages show them: each with its base's and source's names,
looked up in one query for the lot."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from registry.adapters.schemas import AdapterOut
from registry.models.service import model_names
from registry.tables import Adapter


def adapter_outs(session: Session, adapters: Sequence[Adapter], *,
                 summary: bool = False) -> list[AdapterOut]:
    """`summary`: each quality cut to its top-level figures, as listings show it."""
    names = model_names(session, [*(a.base_id for a in adapters),
                                  *(a.source_model_id for a in adapters)])
    return [AdapterOut.of(a, names, summary=summary) for a in adapters]


def adapter_out(session: Session, adapter: Adapter) -> AdapterOut:
    return adapter_outs(session, [adapter])[0]
