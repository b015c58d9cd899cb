"""The errors each operation can answer that no signature shows: lookups by path
parameter, and the state rules services enforce. registry/openapi.py documents them."""

from __future__ import annotations

from registry.errors import (
    AdapterNotFound,
    FileNotFound,
    JobNotFound,
    ModelNotFound,
    TokenNotFound,
)

# What a lookup by each path parameter fails with; an upload's filename is created, not
# looked up.
NOT_FOUND = {"model": ModelNotFound.__name__, "ref": AdapterNotFound.__name__,
              "filename": FileNotFound.__name__, "token_id": TokenNotFound.__name__,
              "job_id": JobNotFound.__name__}
# Errors that come from a service's rules about state, which no signature shows.
SERVICE_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("get", "/models"): {404: "`base` names no model (`ModelNotFound`)."},
    ("post", "/models"): {
        409: "A model of that name exists (`NameTaken`).",
        422: "A finetune's `base` is unknown or is itself a finetune, or a base model was "
             "given one (`UnknownBase`, `InvalidRequest`)."},
    ("post", "/models/{model}/finalize"): {
        409: "The finetune's base is not finalized yet (`NotReady`).",
        422: "Files are missing (`MissingFiles`) or inconsistent (`InvalidRequest`, "
             "`InvalidSafetensors`), or a finetune's shapes do not fit its base "
             "(`IncompatibleBase`, one entry per shape in `mismatches`)."},
    ("delete", "/models/{model}"): {
        409: "Finetunes or adapters still depend on the model (`HasDependents`)."},
    ("post", "/adapters"): {
        409: "The base or source model is not finalized yet (`NotReady`).",
        422: "The base or source model is unknown (`InvalidRequest`)."},
    ("post", "/adapters/{ref}/finalize"): {
        409: "Concurrent pushes of this name kept taking the next version (`Conflict`); "
             "retry.",
        422: "Files are missing (`MissingFiles`) or do not fit the base (`IncompatibleBase`, "
             "one entry per shape in `mismatches`)."},
    ("put", "/adapters/{ref}/aliases/{alias}"): {
        409: "Only a finalized adapter version can carry an alias (`NotReady`)."},
    ("delete", "/tokens/{token_id}"): {
        409: "It is the last active admin token (`LastAdminToken`); create another first."},
    ("post", "/models/{model}/compress"): {
        409: "The fine-tune is not finalized yet (`NotReady`), or the `Idempotency-Key` "
             "was used for another request (`IdempotencyKeyReused`).",
        422: "The model is a base (`NotAFinetune`), the method is unknown "
             "(`UnknownMethod`), options do not fit the method or each other "
             "(`InvalidJobParameters`), or targets match no linear weight "
             "(`UnknownTargets`)."},
    ("get", "/jobs"): {404: "`model` names no model (`ModelNotFound`)."},
    ("post", "/jobs/{job_id}/cancel"): {
        409: "The job has already ended (`JobFinished`)."},
}
