"""The compress form of a fine-tune's page, read into the API's own CompressRequest.

The form has a field for each common option and an "advanced" JSON object for the
rest, merged underneath, so options the jobs API gains work from the page at once.
Distillation and evaluation fields are merged into the advanced object's `distill` and
`evaluate` (when it has them), field by field, so either way of giving them works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from compress.errors import InvalidJSON
from compress.tensorio import strictjson
from registry.jobs.schemas import CompressRequest
from registry.ui.render import PageError

TEXT_FIELDS = ("name", "alias", "scale_mode", "verify")
INT_FIELDS = ("rank", "max_rank")
FLOAT_FIELDS = ("target_error", "max_error")
MAX_ADVANCED_CHARS = 10_000
# Form field -> (key in the API's object, type, what the error message calls it).
DISTILL_FIELDS: dict[str, tuple[str, type[int] | type[float], str]] = {
    "distill_steps": ("steps", int, "distillation steps"),
    "distill_lr": ("lr", float, "distillation learning rate"),
    "distill_seq_len": ("seq_len", int, "distillation tokens per row"),
}
EVALUATE_FIELDS: dict[str, tuple[str, type[int] | type[float], str]] = {
    "evaluate_seq_len": ("seq_len", int, "evaluation tokens per row"),
    "evaluate_max_batches": ("max_batches", int, "evaluation batches per data set"),
    "evaluate_max_tokens": ("max_tokens", int, "evaluation token budget per data set"),
}


class FormError(PageError):
    """A 422 about the form, naming the field it is about (None: the form as a whole),
    so the page can show it beside that field."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(422, "InvalidJobParameters", detail)
        self.field = field


def _invalid(detail: str, field: str | None = None) -> FormError:
    return FormError(detail, field)


def _advanced(text: str, max_depth: int) -> dict[str, Any]:
    if not text.strip():
        return {}
    if len(text) > MAX_ADVANCED_CHARS:
        raise _invalid(f"advanced options are limited to {MAX_ADVANCED_CHARS} characters",
                       "advanced")
    try:
        # Strictly: bounded nesting (json recurses per level) and no Infinity or NaN.
        parsed = strictjson.loads(text, "advanced options", max_depth=max_depth)
    except InvalidJSON as exc:
        raise _invalid(f"advanced options must be a JSON object: {exc.cause}",
                       "advanced") from None
    if not isinstance(parsed, dict):
        raise _invalid("advanced options must be a JSON object, e.g. {\"targets_only\": true}",
                       "advanced")
    return parsed


def _number(form: Mapping[str, str], key: str, kind: type[int] | type[float],
            label: str | None = None) -> Any:
    try:
        return kind(form[key])
    except ValueError:
        raise _invalid(f"{label or key} must be a number, got {form[key]!r}", key) from None


def _section(body: dict[str, Any], key: str, filled: Mapping[str, str],
             fields: Mapping[str, tuple[str, type[int] | type[float], str]]
             ) -> dict[str, Any]:
    """`body[key]` (from the advanced JSON, when an object) with the form's numbers on top."""
    given = body.get(key)
    section = dict(given) if isinstance(given, dict) else {}
    for field, (name, kind, label) in fields.items():
        if field in filled:
            section[name] = _number(filled, field, kind, label)
    return section


def _distill(body: dict[str, Any], filled: Mapping[str, str], method: str) -> None:
    section = _section(body, "distill", filled, DISTILL_FIELDS)
    if "distill_dataset" in filled:
        section["dataset"] = filled["distill_dataset"]
    elif not any(f in filled for f in DISTILL_FIELDS):
        return  # nothing asked in the form: the advanced JSON, if any, stands as given
    if "dataset" not in section:
        raise _invalid("distillation settings were given without a calibration data set; "
                       "choose one under Distillation, or clear the steps and rate",
                       "distill_dataset")
    if method != "bitdelta":
        # The API refuses this too; saying it in the form's own words is clearer.
        raise _invalid(f"distillation trains BitDelta's scales and does not apply to "
                       f"method {method!r}; set the calibration data set to none, or "
                       "choose BitDelta", "distill_dataset")
    body["distill"] = section


def _evaluate(body: dict[str, Any], filled: Mapping[str, str],
              checked: Sequence[str]) -> None:
    section = _section(body, "evaluate", filled, EVALUATE_FIELDS)
    names = [n.strip() for n in checked if n.strip()]
    headline = filled.get("evaluate_headline")
    if headline:
        # The headline (the adapter's gain kept) is measured on the first data set.
        names = [headline, *(n for n in names if n != headline)]
    if names:
        section["datasets"] = names
    elif not any(f in filled for f in EVALUATE_FIELDS):
        return
    if "datasets" not in section:
        raise _invalid("evaluation settings were given without an evaluation data set; "
                       "check at least one under Evaluation", "evaluate")
    body["evaluate"] = section


def compress_request(form: Mapping[str, str], evaluate: Sequence[str] = (), *,
                     max_depth: int = strictjson.DEFAULT_MAX_DEPTH
                     ) -> tuple[str, CompressRequest]:
    """(method, request) from the submitted form; a 422 page when it does not validate.

    `evaluate`: the checked evaluation data sets, in the page's order (a form field
    that repeats, so not in `form`). `max_depth`: the nesting the advanced JSON may
    have (MAX_JSON_DEPTH)."""
    method = form.get("method", "")
    body = _advanced(form.get("advanced", ""), max_depth)
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
    _distill(body, filled, method)
    _evaluate(body, filled, evaluate)
    try:
        return method, CompressRequest.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise _invalid(problems, _field_of(exc)) from None


def _field_of(exc: ValidationError) -> str | None:
    """The form field the first problem is about, when the form has one by that name."""
    loc = exc.errors()[0]["loc"]
    top = str(loc[0]) if loc else ""
    if top in (*TEXT_FIELDS, *INT_FIELDS, *FLOAT_FIELDS, "targets", "targets_only"):
        return top
    if top in ("distill", "evaluate") and len(loc) > 1:
        fields = {**{(top, name): f for f, (name, _, _) in
                     (DISTILL_FIELDS if top == "distill" else EVALUATE_FIELDS).items()},
                  ("distill", "dataset"): "distill_dataset",
                  ("evaluate", "datasets"): "evaluate"}
        return fields.get((top, str(loc[1])), "advanced")
    return "advanced" if top else None
