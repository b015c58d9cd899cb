"""Where a model's bytes come from: the small interface every reader takes, and local files.

`TensorSource` (file names, sizes, positioned reads into the caller's buffer, small JSON
reads) and `LocalSource`; the registry hands in a source over stored blobs, so codecs and
their validation never know where the bytes live. See docs/codecs.md, "Reading and writing
models".
"""

from __future__ import annotations

import io
import mmap
import os
from pathlib import Path
from typing import Protocol, TypeAlias, runtime_checkable

from compress.errors import InvalidModel
from compress.tensorio.pickles import refuse_pickle_name


class TensorSource(Protocol):
    """A model's files, read by position. Implementations need not be thread-safe beyond
    what the codecs do: one reader thread at a time per source."""

    @property
    def name(self) -> str:
        """How messages and reports name the model (a file or directory, a stored model)."""

    def files(self) -> list[str]:
        """The model's file names, sorted; flat (a name never holds a '/')."""

    def size(self, file: str) -> int:
        """The size of `file` in bytes."""

    def read_into(self, file: str, offset: int, buffer: memoryview) -> None:
        """Fill `buffer` with the bytes of `file` from `offset` on.

        Raises InvalidModel if the file ends first (it changed, or its store lost bytes).
        """

    def read_bytes(self, file: str) -> bytes:
        """All of a small file (config.json, the shard index)."""

    def close(self) -> None:
        """Release what the source holds open (files, connections, threads). Closing is
        not final: a later read opens what it needs again, so one source can serve
        several passes (a codec, then verification)."""


@runtime_checkable
class ReadAheadSource(Protocol):
    """A source that can start fetching a range before it is read (local files)."""

    def will_need(self, file: str, offset: int, length: int) -> None:
        """Hint that `length` bytes of `file` from `offset` will be read soon; returns
        at once. A source that cannot act on it does nothing."""


@runtime_checkable
class MappableSource(Protocol):
    """A source whose files can be mapped into memory (local files).

    A codec that only reads a large tensor once (the BitDelta encoder) then reads it
    straight from the page cache, with no copy into a buffer of its own to be read again:
    half the memory traffic, and the reads run on every encoder thread.
    """

    @property
    def can_map(self) -> bool:
        """Whether `mapped` serves at all (a source may be mappable only in some setups)."""

    def mapped(self, file: str, offset: int, length: int) -> memoryview | None:
        """Bytes [offset, offset + length) of `file`, mapped (never written back: the
        mapping is private); None when this file cannot be mapped. The mapping lasts
        while the view or anything made from it is referenced."""


# What every public reader of a model accepts: a path, as always, or a source.
ModelInput: TypeAlias = str | os.PathLike[str] | TensorSource


def as_source(model: ModelInput) -> TensorSource:
    """A path becomes a LocalSource; a source is used as it is."""
    if isinstance(model, str | os.PathLike):
        return LocalSource(Path(model))
    return model


def describe_model(model: ModelInput) -> str:
    """What a report calls the model: the path as given, or the source's name."""
    if isinstance(model, str | os.PathLike):
        return os.fspath(model)
    return model.name


def read_range(source: TensorSource, file: str, offset: int, length: int) -> bytes:
    """Exactly `length` bytes of `file` from `offset` (for headers and small files)."""
    buffer = bytearray(length)
    if length:
        source.read_into(file, offset, memoryview(buffer))
    return bytes(buffer)


class LocalSource:
    """A model on local disk: a directory of files, or one .safetensors file on its own.

    Tensors are read with plain positioned reads, not mmap: mapped pages that have been
    touched count towards resident memory until the file is closed, so a memory-mapped
    pass over a 13 GB model looks like a 13 GB process.
    """

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise InvalidModel(f"{path} does not exist")
        if not path.is_dir():
            refuse_pickle_name(path.name)  # a file given on its own is meant as weights
        self.path = path
        # A file's or directory's own name, as messages have always said it ("." has none).
        self.name = path.name or str(path)
        self.root = path if path.is_dir() else path.parent
        self._only = None if path.is_dir() else path.name  # a single file is the whole model
        self._handles: dict[str, io.FileIO] = {}

    def files(self) -> list[str]:
        if self._only is not None:
            return [self._only]
        return sorted(p.name for p in self.root.iterdir() if p.is_file())

    def size(self, file: str) -> int:
        return self._path(file).stat().st_size

    def read_into(self, file: str, offset: int, buffer: memoryview) -> None:
        handle = self._handle(file)
        handle.seek(offset)
        filled = 0
        while filled < len(buffer):  # one read(2) returns at most ~2 GB on Linux
            got = handle.readinto(buffer[filled:])
            if not got:
                raise InvalidModel(
                    f"{file}: ended at byte {offset + filled}, before the {len(buffer)} bytes "
                    f"asked for at byte {offset}; was the file changed while deltahub read it?")
            filled += got

    @property
    def can_map(self) -> bool:
        return True

    def mapped(self, file: str, offset: int, length: int) -> memoryview | None:
        return map_range(self._handle(file).fileno(), offset, length)

    def will_need(self, file: str, offset: int, length: int) -> None:
        """The kernel reads the range into the page cache in the background, so the disk
        keeps streaming the next tensor while the current one is copied and encoded."""
        advise_will_need(self._handle(file).fileno(), offset, length)

    def read_bytes(self, file: str) -> bytes:
        return self._path(file).read_bytes()  # no handle kept: it is read once

    @property
    def open_files(self) -> dict[str, io.FileIO]:
        """The files held open now, by name (closed by `close`)."""
        return dict(self._handles)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def _handle(self, file: str) -> io.FileIO:
        handle = self._handles.get(file)
        if handle is None:
            handle = io.FileIO(self._path(file), "rb")
            self._handles[file] = handle
        return handle

    def _path(self, file: str) -> Path:
        # Names come from files(); refusing anything else keeps a caller's bug from
        # reading outside the model.
        if file not in self.files():
            raise InvalidModel(f"{self.name} has no file {file!r}")
        return self.root / file


# Linux reads at most one readahead window (read_ahead_kb, a few MB) per WILLNEED advice,
# however long the range: a tensor is asked for in pieces of this size, so the whole of it
# is queued at once and the disk streams it while earlier tensors are encoded.
_ADVICE_BYTES = 4 << 20


def advise_will_need(fd: int, offset: int, length: int) -> None:
    """Start reading bytes [offset, offset + length) of `fd` into the page cache, in the
    background; returns without waiting. Does nothing where posix_fadvise is missing."""
    if not hasattr(os, "posix_fadvise"):  # macOS, Windows
        return
    for start in range(offset, offset + length, _ADVICE_BYTES):
        os.posix_fadvise(fd, start, min(_ADVICE_BYTES, offset + length - start),
                         os.POSIX_FADV_WILLNEED)


def map_range(fd: int, offset: int, length: int) -> memoryview | None:
    """A private, copy-on-write mapping of bytes [offset, offset + length) of open file `fd`.

    Writable, so torch and numpy take it without read-only warnings; a write would only
    change this process's copy of the page, and nothing writes. None where mmap cannot
    serve (an empty range, or a platform without MAP_PRIVATE).
    """
    if length <= 0 or not hasattr(mmap, "MAP_PRIVATE"):
        return None
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    mapping = mmap.mmap(fd, offset - start + length, flags=mmap.MAP_PRIVATE,
                        prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
    if hasattr(mmap, "MADV_SEQUENTIAL"):  # the encoder reads it front to back, once
        mapping.madvise(mmap.MADV_SEQUENTIAL)

    return memoryview(mapping)[offset - start:]
