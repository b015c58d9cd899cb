"""What DELTAHUB_STORAGE_URL may say, parsed without touching any storage.

Settings validate the URL with these at start-up; the factory builds the store from them.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from registry.storage.base import check_key

_FORMS = "file:///abs/dir, file:./relative/dir or s3://bucket/prefix"
# S3's rules for new buckets: 3-63 lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")



def storage_scheme(url: str) -> str:
    """`file` or `s3`, or a ValueError that names the forms DELTAHUB_STORAGE_URL takes."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise _bad(url, "it has a query or fragment")
    if parts.scheme == "file":
        local_path(url)
    elif parts.scheme == "s3":
        s3_location(url)
    else:
        raise _bad(url, "the scheme must be file: or s3:")
    return parts.scheme


def local_path(url: str) -> Path:
    """The directory of a file: URL; a relative one resolves against the working directory."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        # file://data/blobs reads as host "data"; people mean file:./data/blobs.
        raise _bad(url, f"it names host {parts.netloc!r}; use file:///abs/dir or file:./rel/dir")
    path = unquote(parts.path)
    if not path:
        raise _bad(url, "it names no directory")
    return Path(path).resolve()


def s3_location(url: str) -> tuple[str, str]:
    """(bucket, prefix) of an s3:// URL; the prefix has no leading or trailing slash."""
    parts = urlsplit(url)
    bucket = parts.netloc
    if "@" in bucket or ":" in bucket:
        raise _bad(url, "credentials and ports go in the DELTAHUB_S3_* settings, not the URL")
    if not _BUCKET.match(bucket):
        raise _bad(url, f"{bucket!r} is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')")
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ValueError:
            raise _bad(url, f"the prefix {prefix!r} has empty, '.' or '..' parts") from None
    return bucket, prefix


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"DELTAHUB_STORAGE_URL={url!r} is not usable: {why}. Use {_FORMS}.")
