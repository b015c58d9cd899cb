"""Standard Webhooks v1 signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
keyed by the base64 bytes after `whsec_`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
_SECRET_BYTES = 32


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(digest.digest()).decode()


def headers(secrets_: list[str], message_id: str, timestamp: int,
            body: bytes) -> dict[str, str]:
    """The three headers; one signature per secret (two while a rotation's grace lasts)."""
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign(s, message_id, timestamp, body)
                                          for s in secrets_)}
