"""Validate a safetensors file while its bytes stream past, in one pass.

Rides the registry's upload hashing: header, layout, exact length and finite floats, failing
on the earliest chunk that shows the problem. See docs/codecs.md, "Reading and writing models".
"""

from __future__ import annotations

import torch

from compress.errors import InvalidSafetensors, NonFiniteTensor, TooLarge
from compress.tensorio.header import (
    DEFAULT_MAX_HEADER_BYTES,
    DTYPE_BYTES,
    FLOAT_DTYPES,
    TORCH_DTYPES,
    SafetensorsHeader,
    TensorEntry,
    parse_header_json,
    parse_length_prefix,
)
from compress.tensorio.strictjson import DEFAULT_MAX_DEPTH


class StreamingValidator:
    """Feed chunks in order with `feed`, then call `finish` to get the validated header."""

    def __init__(self, source: str, check_finite: bool = True, *,
                 max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
                 max_file_bytes: int | None = None,
                 max_json_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self._source = source
        self._check_finite = check_finite
        self._max_header_bytes = max_header_bytes
        self._max_file_bytes = max_file_bytes  # None: no limit on the whole file
        self._max_json_depth = max_json_depth
        self._pending = bytearray()  # bytes not yet consumed by the current phase
        self._header_len: int | None = None
        self._header: SafetensorsHeader | None = None
        self._entries: list[TensorEntry] = []
        self._entry_index = 0
        self._data_pos = 0  # bytes of the data section seen so far

    @property
    def header(self) -> SafetensorsHeader | None:
        return self._header

    def feed(self, chunk: bytes) -> None:
        if self._header is None:
            self._pending += chunk
            if not self._try_parse_header():
                return
            chunk = bytes(self._pending)
            self._pending.clear()
        self._consume_data(chunk)

    def finish(self) -> SafetensorsHeader:
        if self._header is None:
            if self._header_len is None:
                parse_length_prefix(bytes(self._pending), self._source)  # raises: too small
            raise InvalidSafetensors(
                f"{self._source}: file ends inside its {self._header_len}-byte header"
            )
        if self._data_pos < self._header.data_len:
            arrived = self._header.data_start + self._data_pos
            raise InvalidSafetensors(
                f"{self._source}: file is truncated: the header describes "
                f"{self._header.file_size} bytes but only {arrived} arrived"
            )
        return self._header

    def _try_parse_header(self) -> bool:
        """Parse the header once enough bytes are pending; True once it is parsed."""
        if self._header_len is None:
            if len(self._pending) < 8:
                return False
            # With the header's first byte when it has come: garbage fails on it.
            self._header_len = parse_length_prefix(bytes(self._pending[:9]), self._source,
                                                   self._max_header_bytes)
            self._check_file_size(8 + self._header_len, "its header alone makes it a")
        end = 8 + self._header_len
        if len(self._pending) < end:
            return False
        header = parse_header_json(bytes(self._pending[8:end]), self._header_len,
                                   self._source, self._max_json_depth)
        self._check_file_size(header.file_size, "its header describes a")
        self._header = header
        self._entries = list(header.tensors.values())  # already in data order
        del self._pending[:end]
        return True

    def _check_file_size(self, size: int, what: str) -> None:
        """Refuse a file whose header already says it is over the limit, before its body."""
        if self._max_file_bytes is not None and size > self._max_file_bytes:
            raise TooLarge(
                f"{self._source}: {what} {size}-byte file, over the "
                f"{self._max_file_bytes}-byte limit for this file; split the model into "
                "smaller shards"
            )

    def _consume_data(self, chunk: bytes) -> None:
        assert self._header is not None
        if not chunk:
            return
        if self._data_pos + len(chunk) > self._header.data_len:
            raise InvalidSafetensors(
                f"{self._source}: {self._data_pos + len(chunk) - self._header.data_len} trailing "
                "bytes after the last tensor; the file is corrupt or was appended to"
            )
        if self._check_finite:
            self._check_chunk(chunk)
        self._data_pos += len(chunk)

    def _check_chunk(self, chunk: bytes) -> None:
        """Check the float elements that `chunk` completes, carrying split elements over."""
        view = memoryview(chunk)
        pos = self._data_pos
        while view:
            entry = self._entries[self._entry_index]
            if pos >= entry.end:
                self._entry_index += 1
                continue
            take = min(len(view), entry.end - pos)
            if entry.dtype in FLOAT_DTYPES:
                self._check_float_bytes(entry, view[:take])
            pos += take
            view = view[take:]

    def _check_float_bytes(self, entry: TensorEntry, data: memoryview) -> None:
        width = DTYPE_BYTES[entry.dtype]
        # An element split across chunks waits in _pending until its last byte arrives.
        if self._pending:
            need = width - len(self._pending)
            self._pending += data[:need]
            data = data[need:]
            if len(self._pending) < width:
                return
            self._assert_finite(entry, bytes(self._pending))
            self._pending.clear()
        whole = len(data) - len(data) % width
        if whole:
            self._assert_finite(entry, data[:whole])
        if whole < len(data):
            self._pending += data[whole:]

    def _assert_finite(self, entry: TensorEntry, data: bytes | memoryview) -> None:
        values = torch.frombuffer(bytearray(data), dtype=TORCH_DTYPES[entry.dtype])
        if values.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            values = values.to(torch.float16)
        if not bool(torch.isfinite(values).all()):
            raise NonFiniteTensor(entry.name, self._source)
