"""API errors: one base class carrying an HTTP status, and one JSON shape for all of them.

Every error response is `{"error": "<Name>", "detail": "<what was wrong and what to do>"}`
(plus `mismatches` when there is a list of them, and `did_you_mean` when an unknown name
looks like known ones).
"""

from __future__ import annotations

from typing import Any, ClassVar

from compress.errors import (
    CodecError,
    IncompatibleModels,
    InvalidDataset,
    MissingTokenizer,
    PickleRefused,
    TooLarge,
)


class APIError(Exception):
    status_code: ClassVar[int] = 400

    def __init__(self, detail: str, *, name: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.name = name or type(self).__name__
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.name, "detail": self.detail, **self.extra}

    def headers(self) -> dict[str, str]:
        return {}


class Unauthorized(APIError):
    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}  # RFC 9110 §11.6.1: say how to authenticate


class Forbidden(APIError):
    status_code = 403


class NotFound(APIError):
    status_code = 404

    def __init__(self, detail: str, *, name: str | None = None,
                 did_you_mean: list[str] | None = None, **extra: Any) -> None:
        # The close matches go in the body only when there are some.
        if did_you_mean:
            extra["did_you_mean"] = did_you_mean
        super().__init__(detail, name=name, **extra)


class ModelNotFound(NotFound):
    pass


class AdapterNotFound(NotFound):
    pass


class FileNotFound(NotFound):
    pass


class AliasNotFound(NotFound):
    pass


class JobNotFound(NotFound):
    pass


class TokenNotFound(NotFound):
    pass


class DatasetNotFound(NotFound):
    pass


class Conflict(APIError):
    status_code = 409


class DatasetChanged(Conflict):
    """A data set a job names was replaced since the job was queued."""


class NameTaken(Conflict):
    pass


class NotPending(Conflict):
    """Files of a finalized model or adapter are immutable."""


class DraftInProgress(Conflict):
    """Another token's pending draft holds the model name."""


class DraftChanged(Conflict):
    """A draft's files are not the ones the finalizing client uploaded."""


class NotReady(Conflict):
    pass


class HasDependents(Conflict):
    pass


class LastAdminToken(Conflict):
    pass


class JobFinished(Conflict):
    pass


class RequestTimeout(APIError):
    """The client stopped sending the body it announced."""

    status_code = 408

    def headers(self) -> dict[str, str]:
        # RFC 9110 §15.5.9: the body was never finished, so the connection cannot be
        # reused; without this the server keeps reading a stalled socket.
        return {"Connection": "close"}


class PayloadTooLarge(APIError):
    status_code = 413


class UnsupportedFile(APIError):
    status_code = 415


class Unprocessable(APIError):
    status_code = 422


class InvalidName(Unprocessable):
    pass


class InvalidFilename(Unprocessable):
    pass


class InvalidRequest(Unprocessable):
    pass


class ChecksumMismatch(Unprocessable):
    pass


class NotAFinetune(Unprocessable):
    pass


class InvalidSource(Unprocessable):
    """An adapter's source is not a fine-tune of the adapter's base."""


class InvalidJobParameters(Unprocessable):
    pass


class MissingFiles(Unprocessable):
    pass


class IncompatibleBase(Unprocessable):
    pass


class InvalidPageToken(Unprocessable):
    pass


class Unavailable(APIError):
    """Busy or down for now: the client should retry after `Retry-After` seconds."""

    status_code = 503

    def __init__(self, detail: str, *, retry_after_seconds: int = 2, name: str | None = None,
                 **extra: Any) -> None:
        super().__init__(detail, name=name, **extra)
        self.retry_after_seconds = retry_after_seconds

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class DatabaseBusy(Unavailable):
    pass


class DatabaseUnavailable(Unavailable):
    pass


class StorageUnavailable(Unavailable):
    pass


def from_codec_error(exc: CodecError) -> APIError:
    """Translate a codec's complaint about input into the API error that reports it."""
    # Keep the codec's own class name ("InvalidSafetensors", "NonFiniteTensor"): it is
    # the most precise name for what went wrong.
    name = type(exc).__name__
    if isinstance(exc, PickleRefused):
        return UnsupportedFile(exc.detail, name=name)
    if isinstance(exc, TooLarge):  # the same answer as a body over its byte limit
        return PayloadTooLarge(exc.detail)
    if isinstance(exc, IncompatibleModels):
        return IncompatibleBase(exc.detail, name=name, mismatches=exc.mismatches)
    if isinstance(exc, InvalidDataset | MissingTokenizer):
        # Bad data or data the model cannot read: the request's content is at fault (not
        # its kind, which is a 415 decided by the file's name before any byte is read).
        return Unprocessable(exc.detail, name=name)
    return Unprocessable(exc.detail, name=name)


# Quality reports and plots (registry/ui/plots.py)
class PlotsBusy(Unavailable):
    """Every plot drawing slot is taken (DELTAHUB_MAX_PLOT_RENDERS)."""

# Data sets and uploads (issue 22).
class ContentChecksBusy(Unavailable):
    """Every slot for checking an uploaded file whole is taken (MAX_CONCURRENT_CONTENT_CHECKS)."""

# -- web pages' JSON endpoints (i22-http) ---------------------------------------------


class SignInRequired(APIError):
    """A script of the pages called without a live session (pages redirect instead).

    No `WWW-Authenticate: Bearer`: the cure is the sign-in page, not a bearer token.
    """

    status_code = 401

# Compression jobs (registry/jobs/): refusals at enqueue.
class IdempotencyKeyReused(Unprocessable):
    """The key was used before by this token for a different request (a 422, as the IETF
    Idempotency-Key draft says: the request, not the server's state, is at fault)."""


class JobTooLarge(Unprocessable):
    """The job's estimated disk, memory or steps exceed a configured limit."""


class SequenceTooLong(Unprocessable):
    """A seq_len beyond the positions the model was trained for."""


class TooManyQueuedJobs(APIError):
    """The token already has its limit of jobs queued or running."""

    status_code = 429

    def __init__(self, detail: str, *, retry_after_seconds: int, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after_seconds = retry_after_seconds

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class CursorExpired(APIError):
    """The feed's cursor is older than the events retention keeps: some were pruned."""

    status_code = 410


# Signed webhooks (registry/webhooks/).
class WebhookNotFound(NotFound):
    pass


class WebhookTargetRefused(Unprocessable):
    """The URL is not http(s), does not resolve, or resolves to an address a webhook may
    not reach (loopback, private, link-local, metadata...; DELTAHUB_WEBHOOK_ALLOW_PRIVATE)."""


class DeliveryNotFound(NotFound):
    pass


class RangeNotSatisfiable(APIError):
    """A download's `Range` starts past the end of the file (RFC 9110 §15.5.17)."""

    status_code = 416

    def __init__(self, detail: str, *, size: int, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}  # the size, for the next try


# Issue 29's review.
class ServerStopping(Unavailable):
    """The server is shutting down: a long-poll is answered at once, and told to come back
    (to another process, or this one restarted) rather than ask again at once."""


class CursorAhead(Conflict):
    """A feed cursor past the newest event: from another database, or one reset since."""


class WebhookDisabled(Conflict):
    """A test or a redelivery asked of a disabled webhook (nothing would be sent)."""


class EventNotSubscribed(Conflict):
    """A redelivery of an event the webhook's types or filters leave out."""
