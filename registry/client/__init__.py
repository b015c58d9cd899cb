"""A small HTTP client for deltahub's API: what the CLI and CI scripts use.

It needs httpx and the standard library only, so `pip install deltahub` (no torch, no
server) is enough to push, list and pull. Failures are the client's own exceptions
(`ClientError`: the server refused; `ServerUnreachable`: no answer), each naming the
request; transient ones are retried first (retry.py).
"""

from registry.client.api import DEFAULT_TIMEOUT_SECONDS, DEFAULT_URL, DeltahubClient
from registry.client.errors import ChecksumMismatch, ClientError, ServerUnreachable
from registry.client.files import sha256_of
from registry.client.push import Push
from registry.client.retry import NO_RETRY, RetryPolicy

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "DEFAULT_URL",
    "NO_RETRY",
    "ChecksumMismatch",
    "ClientError",
    "DeltahubClient",
    "Push",
    "RetryPolicy",
    "ServerUnreachable",
    "sha256_of",
]
