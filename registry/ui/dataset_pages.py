"""Data sets: calibration and evaluation data, listed newest first, a page at a time."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from registry.datasets.schemas import DatasetOut
from registry.tables import Status
from registry.ui import views
from registry.ui.access import ViewerDep, read
from registry.ui.render import page

router = APIRouter(prefix="/ui/datasets", include_in_schema=False)


@router.get("")
async def dataset_list(request: Request, viewer: ViewerDep,
                       status: Literal["pending", "ready", ""] = "",
                       page_token: str | None = None) -> HTMLResponse:
    settings = request.app.state.settings
    wanted = Status(status) if status else None

    def gather(session: Session) -> tuple[list[DatasetOut], str | None]:
        return views.dataset_page(session, settings, wanted, page_token)

    found, next_token = await read(request, gather)
    return page(request, "datasets.html", viewer, datasets=found,
                next_page_token=next_token, filters={"status": status})
