"""The compress form of a fine-tune's page, read into the API's own CompressRequest.

The form has a field for each common option and an "advanced" JSON object for the
rest, merged underneath, so options the jobs API gains work from the page at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from registry.jobs.schemas import CompressRequest
from registry.ui.render import PageError

TEXT_FIELDS = ("name", "alias", "scale_mode", "verify")
INT_FIELDS = ("rank", "max_rank")
FLOAT_FIELDS = ("target_error", "max_error")
MAX_ADVANCED_CHARS = 10_000


def _invalid(detail: str) -> PageError:
    return PageError(422, "InvalidJobParameters", detail)


def _advanced(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    if len(text) > MAX_ADVANCED_CHARS:
        raise _invalid(f"advanced options are limited to {MAX_ADVANCED_CHARS} characters")
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise _invalid(f"advanced options must be a JSON object: {exc}") from None
    if not isinstance(parsed, dict):
        raise _invalid("advanced options must be a JSON object, e.g. {\"targets_only\": true}")
    return parsed


def _number(form: Mapping[str, str], key: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(form[key])
    except ValueError:
        raise _invalid(f"{key} must be a number, got {form[key]!r}") from None


def compress_request(form: Mapping[str, str]) -> tuple[str, CompressRequest]:
    """(method, request) from the submitted form; a 422 page when it does not validate."""
    method = form.get("method", "")
    body = _advanced(form.get("advanced", ""))
    filled = {k: v.strip() for k, v in form.items() if isinstance(v, str) and v.strip()}
    for key in TEXT_FIELDS:
        if key in filled:
            body[key] = filled[key]
    for key in INT_FIELDS:
        if key in filled:
            body[key] = _number(filled, key, int)
    for key in FLOAT_FIELDS:
        if key in filled:
            body[key] = _number(filled, key, float)
    if "targets" in filled:
        body["targets"] = [t.strip() for t in filled["targets"].split(",") if t.strip()]
    if filled.get("targets_only") == "on":
        body["targets_only"] = True
    try:
        return method, CompressRequest.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise _invalid(problems) from None
