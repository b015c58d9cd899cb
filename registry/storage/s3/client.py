"""The one boto3 S3 client the stores use, and how its failures are put to a client."""

from __future__ import annotations

from typing import Any

from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)

from registry.settings import Settings

# The boto3 S3 client. Typed as Any because boto3 ships no annotations; with
# boto3-stubs[s3] installed this becomes mypy_boto3_s3.S3Client.
S3Client = Any


def make_s3_client(settings: Settings) -> S3Client:
    """The one place a boto3 S3 client is configured."""
    import boto3  # type: ignore[import-untyped, unused-ignore]

    config = Config(
        region_name=settings.S3_REGION,
        connect_timeout=settings.S3_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.S3_READ_TIMEOUT_SECONDS,
        # total_max_attempts counts the first try too ("max_attempts" would count retries only).
        retries={"total_max_attempts": settings.S3_MAX_ATTEMPTS, "mode": "standard"},
        # MinIO, Ceph and moto serve buckets by path, not by virtual host name.
        s3={"addressing_style": "path"} if settings.S3_ENDPOINT_URL else None,
    )
    # A session per client: boto3's default session is global and not thread-safe.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT_URL,
        aws_access_key_id=settings.S3_ACCESS_KEY_ID,
        aws_secret_access_key=settings.S3_SECRET_ACCESS_KEY,
        config=config,
    )


DENIED_HINT = "check DELTAHUB_S3_ACCESS_KEY_ID/SECRET_ACCESS_KEY and the bucket policy"
_ENDPOINT_HINT = "is DELTAHUB_S3_ENDPOINT_URL right and the server up?"
# What a transport failure was, in words of our own: botocore's messages quote the
# endpoint or proxy URL, which may carry credentials and is no business of a client.
# The first matching class wins, so subclasses come before their bases.
_TRANSPORT_FAILURES: tuple[tuple[type[Exception], str, str], ...] = (
    (ProxyConnectionError, "cannot connect through the proxy", "check the proxy settings"),
    (SSLError, "TLS verification of the endpoint failed", "check its certificate"),
    (ConnectTimeoutError, "connecting to the endpoint timed out", _ENDPOINT_HINT),
    (EndpointConnectionError, "cannot connect to the endpoint", _ENDPOINT_HINT),
    (ReadTimeoutError, "the endpoint did not answer in time",
     "retry later, or raise DELTAHUB_S3_READ_TIMEOUT_SECONDS"),
    (ConnectionClosedError, "the endpoint closed the connection", "retry later"),
    (NoCredentialsError, "no credentials were found",
     "set DELTAHUB_S3_ACCESS_KEY_ID and DELTAHUB_S3_SECRET_ACCESS_KEY"),
)


def describe_failure(exc: Exception) -> str:
    """A transport or transfer failure as a client may see it: no URL, path or secret."""
    for kind, what, hint in _TRANSPORT_FAILURES:
        if isinstance(exc, kind):
            return f"{what}; {hint}"
    return f"{type(exc).__name__}; retry later"
