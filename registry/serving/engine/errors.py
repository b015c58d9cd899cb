"""The engine's errors: one base with an HTTP status, rendered as the registry renders its own
(`{"error": <ClassName>, "detail": ...}`), each message naming what to do next."""

from __future__ import annotations


class EngineError(Exception):
    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ModelNotFound(EngineError):
    status_code = 404


class UnsupportedAdapter(EngineError):
    """Not a BitDelta delta of this engine's base, or one that changes what the engine
    cannot route per tenant."""

    status_code = 422


class UnsupportedModel(EngineError):
    status_code = 422


class InvalidGenerationRequest(EngineError):
    status_code = 400


class ContextTooLong(EngineError):
    status_code = 400


class EngineOverloaded(EngineError):
    """The waiting queue is full: retry after a moment, or add a replica."""

    status_code = 503


class TenantCapacityExhausted(EngineError):
    """Every resident tenant has requests in flight and no budget is left for another."""

    status_code = 503


class RegistryUnavailable(EngineError):
    status_code = 502


class Unauthorized(EngineError):
    status_code = 401


class GenerationFailed(EngineError):
    """A decode step raised: its requests fail, the engine goes on with the next ones."""

    status_code = 500
