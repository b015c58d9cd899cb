"""How a commit copies a staged object to its content address on S3.

One CopyObject copies up to 5 GiB, and every S3-compatible server has it; only larger
objects need a multipart copy (UploadPartCopy), which simpler servers lack.
"""

from __future__ import annotations

S3_MAX_PARTS = 10_000
MAX_COPY_OBJECT_BYTES = 5 * 1024**3  # the most one CopyObject copies
# Parts of a multipart copy, which only blobs over 5 GiB need. The copy runs inside the
# server, so a big part costs no memory here; 512 MiB keeps a 50 GB blob (the default
# DELTAHUB_MAX_UPLOAD_BYTES) to about 100 requests. A choice, not a measurement.
COPY_PART_BYTES = 512 * 1024 * 1024


def uses_multipart_copy(size: int, max_copy_object_bytes: int = MAX_COPY_OBJECT_BYTES) -> bool:
    """Whether copying an object of `size` bytes takes a multipart copy.

    One CopyObject copies up to 5 GiB, and it is all that simpler S3 servers (s3rver)
    offer; boto3's managed `copy` goes multipart from 8 MiB, which they refuse.
    """
    return size > max_copy_object_bytes


def copy_part_ranges(size: int, part_bytes: int = COPY_PART_BYTES) -> list[str]:
    """The CopySourceRange of each part of a multipart copy of `size` bytes.

    Parts grow past `part_bytes` where S3's 10,000-part limit requires it.
    """
    part = max(part_bytes, -(-size // S3_MAX_PARTS))
    return [f"bytes={start}-{min(start + part, size) - 1}" for start in range(0, size, part)]
