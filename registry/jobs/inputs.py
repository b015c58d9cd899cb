"""A job's inputs: a stored model, read in place from the blob store as a TensorSource.

No download and no scratch copy: a codec reads the model through `BlobSource` one
tensor at a time, each a ranged read (large ones split and fetched in parallel straight
into the tensor's buffer), with the headers' first bytes fetched once. `checkpoint` runs
before every request, so a cancelled job stops within one chunk. docs/architecture.md,
"Compression jobs", says why.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from compress.errors import InvalidModel
from compress.tensorio import map_range
from registry.errors import ModelNotFound
from registry.infra.database import Database
from registry.models.repository import ModelRepository
from registry.storage.base import BlobStore

# What a codec reads of a model: its weights, the shard index and config.json.
_INPUT_SUFFIXES = (".safetensors", ".json")

# One request's worth of a file's start. A 7B model's shard header is tens of KB, and
# Llama-2-70B's largest ~100 KB (compress/tensorio/header.py): 256 KiB takes either in
# the one request its first 8 bytes cost anyway, as it takes all of a config.json or a
# shard index.
HEAD_BYTES = 256 * 2**10
# S3's guidance for ranged GETs is 8-16 MB each, in parallel; boto3's managed download
# (what a job used before) runs 10 parallel 8 MiB parts. 16 MiB x 8 keeps each request
# short enough to retry and to cancel between, and stays within botocore's default pool
# of 10 connections per client. Chosen from that guidance, not measured: the S3 servers
# the tests run on loopback say nothing about a real store's latency. A Llama-2-7B in
# fp16 (13.48 GB, 291 tensors) is then about 930 requests.
CHUNK_BYTES = 16 * 2**20
PARALLEL_READS = 8


@dataclass(frozen=True)
class StoredFile:
    """One file of a model as the registry recorded it."""

    filename: str
    sha256: str
    size: int


def _go_on() -> None:
    """The default checkpoint: never cancelled."""


class BlobSource:
    """A stored model's files as a TensorSource: ranged reads of its blobs."""

    def __init__(self, name: str, files: Iterable[StoredFile], store: BlobStore,
                 checkpoint: Callable[[], None] = _go_on, *, head_bytes: int = HEAD_BYTES,
                 chunk_bytes: int = CHUNK_BYTES, parallel: int = PARALLEL_READS) -> None:
        if head_bytes < 8 or chunk_bytes < 1 or parallel < 1:
            raise ValueError("head_bytes must be at least 8, chunk_bytes and parallel at least 1")
        self.name = name
        self._files = {f.filename: f for f in files}
        self._store = store
        self._checkpoint = checkpoint
        self._head_bytes, self._chunk_bytes, self._parallel = head_bytes, chunk_bytes, parallel
        self._heads: dict[str, bytes] = {}  # kept across close(): small, and read again
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def files(self) -> list[str]:
        return sorted(self._files)

    def size(self, file: str) -> int:
        return self._file(file).size

    def read_bytes(self, file: str) -> bytes:
        buffer = bytearray(self.size(file))
        self.read_into(file, 0, memoryview(buffer))
        return bytes(buffer)

    def read_into(self, file: str, offset: int, buffer: memoryview) -> None:
        stored = self._in_range(file, offset, len(buffer))
        if not len(buffer):
            return
        served = 0
        if offset < self._head_bytes:
            head = self._head(stored)
            served = min(len(head) - offset, len(buffer))
            buffer[:served] = head[offset:offset + served]
        if served < len(buffer):
            self._fetch(stored, offset + served, buffer[served:])

    @property
    def can_map(self) -> bool:
        return self._store.is_local

    def mapped(self, file: str, offset: int, length: int) -> memoryview | None:
        """Maps the blob's file where the store is a local directory (a codec then reads
        the page cache itself: compress/tensorio/sources.py); None for an object store.
        A job's blobs are never rewritten in place, and a mapping outlives their removal,
        so nothing can change under it."""
        stored = self._in_range(file, offset, length)
        self._checkpoint()  # a cancelled job stops here, as at a read
        path = self._store.local_path(stored.sha256)
        if path is None or path.stat().st_size != stored.size:
            return None  # not local, or not the recorded blob: the reads report what is wrong
        with path.open("rb") as handle:
            return map_range(handle.fileno(), offset, length)  # the mapping keeps its own fd

    def will_need(self, file: str, offset: int, length: int) -> None:
        """Passed to the store (a local disk reads ahead; an object store ignores it)."""
        self._store.will_need(self._file(file).sha256, offset, length)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _in_range(self, file: str, offset: int, length: int) -> StoredFile:
        """`file`'s record, refusing a range that runs past its recorded size."""
        stored = self._file(file)
        if offset < 0 or offset + length > stored.size:
            raise InvalidModel(f"{file}: ended at byte {stored.size}, before the {length} "
                               f"bytes asked for at byte {offset}")
        return stored

    def _file(self, file: str) -> StoredFile:
        stored = self._files.get(file)
        if stored is None:
            raise InvalidModel(f"{self.name} has no file {file!r}")
        return stored

    def _head(self, stored: StoredFile) -> bytes:
        with self._lock:
            head = self._heads.get(stored.filename)
            if head is None:
                buffer = bytearray(min(self._head_bytes, stored.size))
                self._get(stored, 0, memoryview(buffer))
                head = self._heads[stored.filename] = bytes(buffer)
        return head

    def _fetch(self, stored: StoredFile, start: int, view: memoryview) -> None:
        """Bytes from `start` into `view`: one request, or bounded ones in parallel."""
        step = self._chunk_bytes
        if len(view) <= step:
            self._get(stored, start, view)
            return
        failed = threading.Event()

        def get(at: int) -> None:
            if failed.is_set():  # a failure (a cancellation) calls off the chunks not begun
                return
            try:
                self._get(stored, start + at, view[at:at + step])
            except BaseException:
                failed.set()
                raise

        pool = self._executor()
        futures = [pool.submit(get, at) for at in range(0, len(view), step)]
        concurrent.futures.wait(futures)  # none writes into `view` once we return
        for future in futures:
            future.result()  # re-raises a failure here, on the reader's thread

    def _get(self, stored: StoredFile, start: int, view: memoryview) -> None:
        """One ranged read of the blob, straight into `view`."""
        self._checkpoint()
        filled = self._store.read_into(stored.sha256, start, view)
        if filled < len(view):
            raise InvalidModel(
                f"{stored.filename} of {self.name}: the store gave {filled} of the "
                f"{len(view)} bytes at byte {start}; the blob is shorter than the "
                f"{stored.size} bytes recorded for it, so the store lost part of it: push "
                "the model again")

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self._parallel, thread_name_prefix="deltahub-blob-read")
            return self._pool


def open_model(database: Database, store: BlobStore, model_id: int,
               checkpoint: Callable[[], None] = _go_on) -> BlobSource:
    """Model `model_id`'s weights and JSON files, to be read in place from `store`."""
    with database.reading() as session:
        model = ModelRepository(session).by_id(model_id)
        if model is None:
            raise ModelNotFound(f"model {model_id} was deleted while its job waited")
        files = [StoredFile(f.filename, f.sha256, f.size) for f in model.files
                 if f.filename.endswith(_INPUT_SUFFIXES)]
        name = f"model {model.name!r}"
    return BlobSource(name, files, store, checkpoint)
