"""Models as the API and the pages show them: each with its base's name (and the model a
4-bit base was quantized from), looked up in one query for the lot."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from registry.models.schemas import ModelOut
from registry.models.service import model_names
from registry.tables import Model


def model_outs(session: Session, models: Sequence[Model]) -> list[ModelOut]:
    names = model_names(session, [*(m.base_id for m in models),
                                  *(m.quantized_from_id for m in models)])
    return [ModelOut.of(m, names.get(m.base_id) if m.base_id else None,
                        names.get(m.quantized_from_id) if m.quantized_from_id else None)
            for m in models]


def model_out(session: Session, model: Model) -> ModelOut:
    return model_outs(session, [model])[0]
