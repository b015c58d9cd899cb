"""What every repository's listing shares: keyset pages, newest first, by id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session


def newest_first(session: Session, query: Select[Any], id_column: InstrumentedAttribute[int],
                 *, equal: Mapping[InstrumentedAttribute[Any], object], after_id: int | None,
                 limit: int) -> list[Any]:
    """Rows of `query` whose columns equal the non-None values of `equal`, with ids below
    `after_id` (the previous page's last), newest first, at most `limit`."""
    return list(session.scalars(newest_first_query(query, id_column, equal=equal,
                                                   after_id=after_id, limit=limit)))


def newest_first_query(query: Select[Any], id_column: InstrumentedAttribute[int], *,
                       equal: Mapping[InstrumentedAttribute[Any], object],
                       after_id: int | None, limit: int) -> Select[Any]:
    """`newest_first`'s statement, for callers that read its rows rather than objects."""
    for column, value in equal.items():
        if value is not None:
            query = query.where(column == value)
    if after_id is not None:
        query = query.where(id_column < after_id)
    return query.order_by(id_column.desc()).limit(limit)
