"""The staging write of an S3 upload: parts streamed as a multipart upload.

A body smaller than one part becomes a single PutObject at finish; an abort removes
whatever was created (the multipart upload, or the put object). Some S3-compatible
servers (s3rver) cannot abort a multipart upload; the writer then completes it with
the parts it has and deletes the result, so nothing is left either way.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]

from registry.storage.base import StagedObject, StagingWriter
from registry.storage.s3.bucket import S3Bucket

# What an S3-compatible server answers for an operation it does not have: NotImplemented
# (501) as S3 documents it, or MethodNotAllowed (405), s3rver's answer to an abort.
UNSUPPORTED_CODES = frozenset({"NotImplemented", "MethodNotAllowed"})


def error_code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


def abort_multipart(bucket: S3Bucket, full: str, upload_id: str) -> bool:
    """Abort a multipart upload; False if the server has no AbortMultipartUpload."""
    with bucket.errors("abort", full):
        try:
            bucket.client.abort_multipart_upload(Bucket=bucket.name, Key=full, UploadId=upload_id)
        except ClientError as exc:
            code = error_code(exc)
            if code in UNSUPPORTED_CODES:
                return False
            if code != "NoSuchUpload":
                raise  # NoSuchUpload: someone (gc, a retry) aborted it already
    return True


def part_checksums(response: dict[str, Any]) -> dict[str, Any]:
    """The checksums a part's response carries: when botocore sent one with the part,
    completing the upload must repeat it."""
    return {k: v for k, v in response.items() if k.startswith("Checksum") and v}


class S3StagingWriter(StagingWriter):
    """Buffers one part at a time; a write smaller than a part becomes one PutObject."""

    def __init__(self, bucket: S3Bucket, key: str, part_bytes: int) -> None:
        self._bucket = bucket
        self._part_bytes = part_bytes
        self._key = key
        self._full = bucket.full_key(key)
        self._buffer = bytearray()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._may_exist = False  # an object may have been created under the key
        self._closed = False
        self._staged: StagedObject | None = None

    @property
    def finished(self) -> bool:
        return self._staged is not None

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("write to an upload that is already finished or aborted")
        self._buffer += data
        self._size += len(data)
        part = self._part_bytes
        while len(self._buffer) >= part:
            self._upload_part(bytes(self._buffer[:part]))
            del self._buffer[:part]

    def _upload_part(self, body: bytes) -> None:
        client, bucket = self._bucket.client, self._bucket.name
        with self._bucket.errors("upload", self._full):
            if self._upload_id is None:
                created = client.create_multipart_upload(Bucket=bucket, Key=self._full)
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            response = client.upload_part(
                Bucket=bucket,
                Key=self._full,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"],
                            **part_checksums(response)})

    def _complete(self) -> None:
        self._may_exist = True
        with self._bucket.errors("complete upload", self._full):
            self._bucket.client.complete_multipart_upload(
                Bucket=self._bucket.name,
                Key=self._full,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._upload_id = None

    def finish(self) -> StagedObject:
        if self._staged is not None:
            return self._staged
        if self._closed:
            raise ValueError("finish of an upload that was aborted")
        if self._upload_id is None:
            self._may_exist = True
            with self._bucket.errors("upload", self._full):
                self._bucket.client.put_object(
                    Bucket=self._bucket.name, Key=self._full, Body=bytes(self._buffer)
                )
        else:
            if self._buffer:
                self._upload_part(bytes(self._buffer))
            self._complete()
        self._buffer = bytearray()
        self._closed = True
        self._staged = StagedObject(key=self._key, size=self._size)
        return self._staged

    def abort(self) -> None:
        self._closed = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            if abort_multipart(self._bucket, self._full, self._upload_id):
                self._upload_id = None
            else:
                # The server cannot abort, and would keep the parts where no listing
                # shows them. The key is this writer's own staging key, so completing
                # the upload (an empty last part if it has none) and deleting the
                # object below drops them without touching anything else.
                if not self._parts:
                    self._upload_part(b"")
                self._complete()
        if self._may_exist:
            with self._bucket.errors("delete", self._full):
                self._bucket.client.delete_object(Bucket=self._bucket.name, Key=self._full)
            self._may_exist = False
