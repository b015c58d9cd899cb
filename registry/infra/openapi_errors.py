"""The errors each operation can answer that no signature shows: lookups by path
parameter, and the state rules services enforce. registry/infra/openapi.py documents them."""

from __future__ import annotations

from registry.errors import (
    AdapterNotFound,
    DatasetNotFound,
    FileNotFound,
    JobNotFound,
    ModelNotFound,
    TokenNotFound,
    WebhookNotFound,
)

# What a lookup by each path parameter fails with; an upload's filename is created, not
# looked up.
NOT_FOUND = {"model": ModelNotFound.__name__, "ref": AdapterNotFound.__name__,
              "filename": FileNotFound.__name__, "token_id": TokenNotFound.__name__,
              "job_id": JobNotFound.__name__, "name": DatasetNotFound.__name__,
              "webhook_id": WebhookNotFound.__name__}
# Errors that come from a service's rules about state, which no signature shows.
SERVICE_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("get", "/models"): {404: "`base` names no model (`ModelNotFound`, with `did_you_mean`)."},
    ("post", "/models"): {
        404: "A finetune's `base` names no model (`UnknownBase`, with `did_you_mean`).",
        409: "A finalized model of that name exists (`NameTaken`), or another token's "
             "pending draft holds the name (`DraftInProgress`: delete it, any token with "
             "`push` may, or wait for it to expire).",
        422: "A finetune's `base` is itself a finetune, or a base model was given one "
             "(`UnknownBase`, `InvalidRequest`), or `files` names a file a model does not "
             "take (`UnsupportedFile`, `PickleRefused`, `InvalidFilename`)."},
    ("post", "/models/{model}/finalize"): {
        409: "The finetune's base is not finalized yet (`NotReady`), or the draft's files are "
             "not the `files` the body lists (`DraftChanged`, each difference in "
             "`mismatches`).",
        422: "Files are missing (`MissingFiles`) or inconsistent (`InvalidRequest`, "
             "`InvalidSafetensors`), or a finetune's shapes do not fit its base "
             "(`IncompatibleBase`, one entry per shape in `mismatches`)."},
    ("delete", "/models/{model}"): {
        403: "The model is finalized: deleting it needs `admin` (`Forbidden`); `push` may "
             "delete only pending drafts.",
        409: "Finetunes or adapters still depend on the model (`HasDependents`)."},
    ("get", "/adapters"): {404: "`base` names no model (`ModelNotFound`, with `did_you_mean`)."},
    ("post", "/adapters"): {
        404: "The base or source model is unknown (`UnknownBase`, `UnknownSource`, with "
             "`did_you_mean`).",
        409: "The base or source model is not finalized yet (`NotReady`).",
        422: "The source is not a fine-tune of the base (`InvalidSource`), or `files` names "
             "a file this kind of adapter does not take (`UnsupportedFile`, "
             "`PickleRefused`, `InvalidFilename`)."},
    ("post", "/adapters/{ref}/finalize"): {
        409: "Concurrent pushes of this name kept taking the next version (`Conflict`); "
             "retry. Or the draft's files are not the `files` the body lists "
             "(`DraftChanged`, each difference in `mismatches`).",
        422: "Files are missing (`MissingFiles`) or do not fit the base (`IncompatibleBase`, "
             "one entry per shape in `mismatches`), or `report.json` is not a report "
             "(`InvalidReport`, `ReportTooLarge`)."},
    ("delete", "/adapters/{ref}"): {
        403: "The adapter version is finalized: deleting it needs `admin` (`Forbidden`); "
             "`push` may delete only pending drafts."},
    ("put", "/adapters/{ref}/aliases/{alias}"): {
        409: "Only a finalized adapter version can carry an alias (`NotReady`)."},
    ("delete", "/adapters/{ref}/aliases/{alias}"): {
        404: "The adapter name has no such alias (`AliasNotFound`, with `did_you_mean`).",
        409: "`latest` cannot be removed: it is what the bare name means (`AliasReserved`)."},
    ("delete", "/tokens/{token_id}"): {
        409: "It is the last active admin token (`LastAdminToken`); create another first."},
    ("post", "/models/{model}/compress"): {
        409: "The fine-tune is not finalized yet (`NotReady`).",
        422: "The model is a base (`NotAFinetune`), the method is unknown "
             "(`UnknownMethod`), options do not fit the method or each other "
             "(`InvalidJobParameters`), targets match no linear weight "
             "(`UnknownTargets`), this token used the `Idempotency-Key` for another "
             "request (`IdempotencyKeyReused`), a `seq_len` is over the fine-tune's "
             "`max_position_embeddings` (`SequenceTooLong`), or the job's estimated "
             "scratch disk, memory or distillation steps are over a limit (`JobTooLarge`).",
        429: "The token already has its limit of jobs queued or running "
             "(`TooManyQueuedJobs`); retry after `Retry-After` seconds."},
    ("get", "/jobs"): {404: "`model` names no model (`ModelNotFound`)."},
    ("post", "/datasets"): {
        409: "A finalized data set of that name holds other files (`NameTaken`: a data set "
             "never changes), or another token's pending draft holds the name "
             "(`DraftInProgress`).",
        422: "`files` names a file a data set does not take (`UnsupportedFile`, "
             "`PickleRefused`, `InvalidFilename`)."},
    ("post", "/datasets/{name}/finalize"): {
        409: "The draft's files are not the `files` the body lists (`DraftChanged`, each "
             "difference in `mismatches`).",
        422: "The draft has no files (`MissingFiles`)."},
    ("delete", "/datasets/{name}"): {
        403: "The data set is finalized: deleting it needs `admin` (`Forbidden`); `push` "
             "may delete only pending drafts."},
    ("post", "/jobs/{job_id}/cancel"): {
        409: "The job has already ended (`JobFinished`)."},
    ("get", "/events"): {
        409: "`after` is past the newest event: a cursor from another database or one "
             "reset since (`CursorAhead`); resynchronise from the newest the detail names.",
        410: "Events after `after` were pruned by retention (`CursorExpired`): "
             "resynchronise, then follow from the cursor the detail names.",
        422: "`types` names an unknown event type, or `wait` is over its bound "
             "(`InvalidRequest`, `ValidationError`).",
        503: "Or the server is shutting down (`ServerStopping`): follow again after "
             "`Retry-After` seconds, from the same cursor."},
    ("post", "/webhooks"): {
        422: "The URL is not http(s), does not resolve, or resolves to a loopback, "
             "private, link-local or metadata address (`WebhookTargetRefused`), or a "
             "filter is not a valid name (`InvalidName`)."},
    ("patch", "/webhooks/{webhook_id}"): {
        422: "As at creation (`WebhookTargetRefused`, `InvalidName`)."},
    ("post", "/webhooks/{webhook_id}/deliveries/{event_id}/redeliver"): {
        404: "No such webhook, or it never had that event and the feed no longer has it "
             "(`WebhookNotFound`, `DeliveryNotFound`).",
        409: "The webhook is disabled (`WebhookDisabled`), or its event types or filters "
             "leave that event out (`EventNotSubscribed`)."},
    ("post", "/webhooks/{webhook_id}/test"): {
        409: "The webhook is disabled: nothing would be sent (`WebhookDisabled`)."},
}
