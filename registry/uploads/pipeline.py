"""One pass over an upload: count, hash, validate and stage every chunk as it arrives.

Nothing here touches the database. The result is a finished staging object plus its
sha256 and (for safetensors) its validated header; the caller commits the blob and
records the row. Any error aborts the staging write, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import CodecError
from compress.modeling.data import DataKind, check_data_file, data_kind
from compress.tensorio import (
    PICKLE_SNIFF_BYTES,
    StreamingValidator,
    describe_pickle,
    describe_pickle_stream,
    header_to_dict,
    pickle_refusal,
    strictjson,
)
from registry.errors import ChecksumMismatch, PayloadTooLarge, Unprocessable, from_codec_error
from registry.storage.base import BlobStore, StagedObject, StagingWriter, StorageError
from registry.uploads.png import PNG_SIGNATURE, check_png, check_png_start
from registry.uploads.rules import ContentKind, FileRule
from registry.uploads.spool import Spool

_MAGIC_BYTES = 8  # enough for every magic number describe_pickle knows
# Checked whole at the end; their size limits (JSON, report, picture) bound the buffer.
_BUFFERED = (ContentKind.JSON, ContentKind.TEXT, ContentKind.PNG)


@dataclass(frozen=True)
class UploadResult:
    staged: StagedObject
    sha256: str
    size: int
    header: dict[str, Any] | None  # validated safetensors header, JSON-ready


class UploadPipeline:
    def __init__(self, store: BlobStore, filename: str, rule: FileRule,
                 expected_sha256: str | None = None) -> None:
        self.filename = filename
        self.rule = rule
        self.expected_sha256 = expected_sha256.lower() if expected_sha256 else None
        self.size = 0
        self._hash = hashlib.sha256()
        self._head = bytearray()  # the first PICKLE_SNIFF_BYTES, for pickle sniffing
        self._buffer = (bytearray() if rule.kind in _BUFFERED else None)
        dataset = rule.kind is ContentKind.DATASET
        self._validator = (
            StreamingValidator(filename, max_header_bytes=rule.max_header_bytes,
                               max_file_bytes=rule.max_bytes,
                               max_json_depth=rule.max_json_depth)
            if rule.kind is ContentKind.SAFETENSORS
            or (dataset and data_kind(filename) is DataKind.TOKENS) else None)
        self._spool: Spool | None = None
        self._writer: StagingWriter = store.start_upload()
        if dataset:
            try:
                self._spool = Spool(filename, rule.spool_dir)
            except BaseException:
                self.abort()  # the staging writer holds an open file
                raise

    def feed(self, chunk: bytes) -> None:
        try:
            self._feed(chunk)
        except BaseException:
            self.abort()
            raise

    def finish(self) -> UploadResult:
        try:
            return self._finish()
        except BaseException:
            self.abort()
            raise
        finally:
            if self._spool is not None:
                self._spool.remove()

    def abort(self) -> None:
        if self._spool is not None:
            self._spool.remove()
        # If storage is down the abort fails too; the original error is the one to
        # report, and garbage collection removes the staging leftovers later.
        with contextlib.suppress(StorageError):
            self._writer.abort()

    def _feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.rule.max_bytes:
            raise PayloadTooLarge(
                f"{self.filename!r} is larger than the {self.rule.max_bytes}-byte limit for "
                f"{self.rule.kind.value} files"
            )
        # Safetensors uploads are not sniffed: their validator refuses pickles itself,
        # and a valid header length can begin with the bytes of a pickle opcode.
        if self._validator is None:
            self._sniff(chunk)
        self._hash.update(chunk)
        if self._validator is not None:
            self._validate(chunk)
        elif self._buffer is not None:
            self._buffer += chunk
            if self.rule.kind is ContentKind.PNG:
                check_png_start(bytes(self._buffer[:len(PNG_SIGNATURE)]), self.filename)
        if self._spool is not None:
            self._spool.write(chunk)
        self._writer.write(chunk)

    def _finish(self) -> UploadResult:
        if self._validator is None and len(self._head) < PICKLE_SNIFF_BYTES:
            self._refuse_pickle(describe_pickle_stream(bytes(self._head), complete=True))
        header = self._check_content()
        sha256 = self._hash.hexdigest()
        if self.expected_sha256 is not None and sha256 != self.expected_sha256:
            raise ChecksumMismatch(
                f"{self.filename!r}: the body hashes to {sha256} but the client declared "
                f"{self.expected_sha256}; the upload was corrupted in transit, send it again"
            )
        staged = self._writer.finish()
        return UploadResult(staged=staged, sha256=sha256, size=self.size, header=header)

    def _check_whole(self, path: Path) -> None:
        slots = self.rule.check_slots
        with slots.slot(self.filename) if slots is not None else contextlib.nullcontext():
            check_data_file(path, self.rule.max_bytes)

    def _validate(self, chunk: bytes) -> None:
        assert self._validator is not None
        try:
            self._validator.feed(chunk)
        except CodecError as exc:
            raise from_codec_error(exc) from exc

    def _sniff(self, chunk: bytes) -> None:
        """Refuse pickle bytes under any name, as early as they show.

        Magic numbers (pickle protocol 2+, zip, .npy) show in the first 8 bytes. Protocol
        0 and 1 have none: the first PICKLE_SNIFF_BYTES are read as pickle opcodes (never
        run) once they are in, or at the end of a shorter file (see _finish).
        """
        before = len(self._head)
        if before >= PICKLE_SNIFF_BYTES:
            return
        self._head += chunk[: PICKLE_SNIFF_BYTES - before]
        if before < _MAGIC_BYTES:
            self._refuse_pickle(describe_pickle(bytes(self._head[:_MAGIC_BYTES])))
        if len(self._head) >= PICKLE_SNIFF_BYTES:
            self._refuse_pickle(describe_pickle_stream(bytes(self._head), complete=False))

    def _refuse_pickle(self, what: str | None) -> None:
        if what is not None:
            raise from_codec_error(pickle_refusal(self.filename, what))

    def _check_content(self) -> dict[str, Any] | None:
        try:
            header = (header_to_dict(self._validator.finish())
                      if self._validator is not None else None)
            if self._spool is not None:
                # The same check an evaluation applies when it reads the file.
                self._check_whole(self._spool.close())
        except CodecError as exc:
            raise from_codec_error(exc) from exc
        if self._validator is not None or self._spool is not None:
            return header
        if self._buffer is None:  # binary: the pickle sniff was the check
            return None
        if self.rule.kind is ContentKind.PNG:
            check_png(bytes(self._buffer), self.filename)
            return None
        try:
            text = bytes(self._buffer).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Unprocessable(f"{self.filename!r} is not UTF-8 text ({exc.reason})",
                                name="InvalidContent") from exc
        if self.rule.kind is ContentKind.JSON:
            # Strict: bounded depth (json recurses per level), no NaN or Infinity (which
            # PostgreSQL refuses and no response can render), no lone surrogates.
            try:
                strictjson.loads(text, self.filename, max_depth=self.rule.max_json_depth)
            except CodecError as exc:
                raise from_codec_error(exc) from exc
        return None
