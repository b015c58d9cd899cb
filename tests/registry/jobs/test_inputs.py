"""A job reads its models in place from the blob store: the same tensors as the files, a
bounded number of ranged reads, byte-identical codec output, and prompt cancellation.

Models are pushed through the API into a local store and into moto's S3 server over
HTTP; the stores are the real backends, with each ranged read recorded on the way.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from compress.bitdelta import compress_bitdelta, verify_delta
from compress.errors import InvalidModel
from compress.tensorio import Checkpoint, ReadAheadSource, SafetensorsHeader
from registry.errors import ModelNotFound
from registry.jobs.inputs import CHUNK_BYTES, HEAD_BYTES, BlobSource, StoredFile, open_model
from registry.models.repository import ModelRepository
from registry.storage.base import BlobStore, StorageError
from registry.storage.local import LocalBlobStore
from registry.storage.s3 import S3BlobStore
from registry.storage.s3.client import make_s3_client
from tests.conftest import Tokens
from tests.models import TINY_LLAMA, make_finetune
from tests.registry.api import register_model
from tests.s3server import S3Server


@dataclass(frozen=True)
class Read:
    sha256: str
    start: int
    end: int | None

    @property
    def length(self) -> int:
        assert self.end is not None, "a source always asks for a bounded range"
        return self.end - self.start


_INSIDE_READ_INTO = threading.local()


class RecordsReads:
    """Mixed into a real store: records every ranged read asked of it, whether as an
    iterator (`read`) or into a buffer (`read_into`, which may itself use `read`)."""

    reads: list[Read]
    hints: list[Read]  # will_need calls, in order
    mapped: list[str]  # blobs a reader asked the file of, to map it

    def local_path(self, sha256: str) -> Path | None:
        self.mapped.append(sha256)
        return super().local_path(sha256)  # type: ignore[misc, no-any-return]

    def will_need(self, sha256: str, start: int, length: int) -> None:
        self.hints.append(Read(sha256, start, start + length))
        super().will_need(sha256, start, length)  # type: ignore[misc]

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if not getattr(_INSIDE_READ_INTO, "active", False):
            self.reads.append(Read(sha256, start, end))
        return super().read(sha256, start, end)  # type: ignore[misc, no-any-return]

    def read_into(self, sha256: str, start: int, view: memoryview) -> int:
        self.reads.append(Read(sha256, start, start + len(view)))
        _INSIDE_READ_INTO.active = True
        try:
            return super().read_into(sha256, start, view)  # type: ignore[misc, no-any-return]
        finally:
            _INSIDE_READ_INTO.active = False


class RecordingLocalStore(RecordsReads, LocalBlobStore):
    pass


class RecordingS3Store(RecordsReads, S3BlobStore):
    http_gets: list[str]  # the GetObject requests its client sent


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """Replaces the suite's local store: the app pushes into it, the job reads from it."""
    recording: RecordingLocalStore | RecordingS3Store
    if request.param == "local":
        recording = RecordingLocalStore(tmp_path / "blobs")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        client = make_s3_client(server.settings())  # its own, to count its HTTP GETs
        recording = RecordingS3Store(client, request.getfixturevalue("s3_bucket"), "deltahub")
        gets: list[str] = []
        client.meta.events.register("before-call.s3.GetObject",
                                    lambda **kwargs: gets.append("GET"))
        recording.http_gets = gets
    recording.reads = []
    recording.hints = []
    recording.mapped = []
    return recording


@dataclass(frozen=True)
class Pushed:
    base: Path
    finetune: Path
    base_id: int
    finetune_id: int


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Llama of ~1.6 MB in three shards with an index: tensors of 16-160 KB, so the
    first of each shard fall inside the head read and the rest do not."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("stored-models")
    torch.manual_seed(0)
    config = LlamaConfig(**{**TINY_LLAMA, "vocab_size": 256, "hidden_size": 128,
                            "intermediate_size": 320})
    LlamaForCausalLM(config).save_pretrained(root / "base", max_shard_size="700KB")
    return root / "base", make_finetune(root / "base", root / "finetune")


@pytest.fixture
def pushed(client: TestClient, tokens: Tokens, model_dirs: tuple[Path, Path],
           store: BlobStore) -> Pushed:
    base, finetune = model_dirs
    base_id = register_model(client, tokens.push, "stored-base", base)["id"]
    finetune_id = register_model(client, tokens.push, "stored-ft", finetune, kind="finetune",
                                 base="stored-base")["id"]
    store.reads.clear()  # type: ignore[attr-defined]  # only what the job reads counts
    if isinstance(store, RecordingS3Store):
        store.http_gets.clear()  # finalize read the shard index back
    return Pushed(base, finetune, base_id, finetune_id)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def test_a_stored_model_reads_as_its_files(app: FastAPI, store: BlobStore,
                                           pushed: Pushed) -> None:
    for directory, model_id in [(pushed.base, pushed.base_id),
                                (pushed.finetune, pushed.finetune_id)]:
        source = open_model(app.state.database, store, model_id)
        with Checkpoint.open(source) as stored, Checkpoint.open(directory) as disk:
            assert len(stored.filenames) == 3
            assert stored.manifest.to_dict() == disk.manifest.to_dict()
            assert stored.config == disk.config is not None
            for name in disk.manifest.names:
                assert same_bits(stored.tensor(name), disk.tensor(name)), name


def files_read(directory: Path) -> dict[str, int]:
    """The files a reader opens (shards, index, config.json), with their sizes; not
    generation_config.json, which is stored but never read."""
    read = [p for p in directory.iterdir() if p.suffix == ".safetensors"
            or p.name in ("config.json", "model.safetensors.index.json")]
    return {p.name: p.stat().st_size for p in read}


def tensors_past_the_head(headers: dict[str, SafetensorsHeader]) -> int:
    return sum(math.ceil((h.data_start + e.end - max(h.data_start + e.start, HEAD_BYTES))
                         / CHUNK_BYTES)
               for h in headers.values() for e in h.tensors.values()
               if h.data_start + e.end > HEAD_BYTES)


def test_one_read_per_file_head_and_per_tensor_each_byte_once(
        app: FastAPI, store: BlobStore, pushed: Pushed) -> None:
    with Checkpoint.open(open_model(app.state.database, store, pushed.base_id)) as stored:
        for name in stored.manifest.names:
            stored.tensor(name)
        headers = stored.headers
    reads: list[Read] = store.reads  # type: ignore[attr-defined]
    files = files_read(pushed.base)
    past_head = tensors_past_the_head(headers)
    tensors = sum(len(h.tensors) for h in headers.values())
    assert past_head < tensors  # some tensors came with the head read, for free
    assert len(reads) == len(files) + past_head  # not one per header read, nor per byte
    assert [r.start for r in reads].count(0) == len(files)
    assert sum(r.length for r in reads) == sum(files.values())  # nothing fetched twice
    if isinstance(store, RecordingS3Store):
        assert len(store.http_gets) == len(reads)


def stored_files(app: FastAPI, model_id: int) -> list[StoredFile]:
    with app.state.database.reading() as session:
        model = ModelRepository(session).by_id(model_id)
        assert model is not None
        return [StoredFile(f.filename, f.sha256, f.size) for f in model.files]


def test_large_tensors_come_in_bounded_chunks(app: FastAPI, store: BlobStore,
                                              pushed: Pushed) -> None:
    chunk = 24 * 2**10
    source = BlobSource("chunked", stored_files(app, pushed.base_id), store, head_bytes=4096,
                        chunk_bytes=chunk, parallel=3)
    with Checkpoint.open(source) as stored, Checkpoint.open(pushed.base) as disk:
        largest = max(disk.manifest.names, key=lambda n: disk.entry(n).nbytes)
        store.reads.clear()  # type: ignore[attr-defined]
        assert same_bits(stored.tensor(largest), disk.tensor(largest))
        nbytes = disk.entry(largest).nbytes
    reads: list[Read] = store.reads  # type: ignore[attr-defined]
    assert nbytes > 5 * chunk
    assert len(reads) == math.ceil(nbytes / chunk)
    assert max(r.length for r in reads) == chunk


def output_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "report.json"}


def without_timing(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("seconds", "throughput_gb_s")}


def test_bitdelta_from_the_store_is_byte_identical(app: FastAPI, store: BlobStore,
                                                   pushed: Pushed, tmp_path: Path) -> None:
    base = open_model(app.state.database, store, pushed.base_id)
    finetune = open_model(app.state.database, store, pushed.finetune_id)
    from_store = compress_bitdelta(base, finetune, tmp_path / "store", workers=1)
    from_disk = compress_bitdelta(pushed.base, pushed.finetune, tmp_path / "disk", workers=1)
    assert output_files(tmp_path / "store") == output_files(tmp_path / "disk")
    assert without_timing(from_store.to_dict()) == without_timing(from_disk.to_dict())
    # The same sources serve a second pass, as a job's verification does.
    checked = verify_delta(base, finetune, tmp_path / "store", "cpu")
    assert checked.ok
    assert checked.layers == verify_delta(pushed.base, pushed.finetune, tmp_path / "disk",
                                          "cpu").layers
    assert (checked.base, checked.finetune) == ("model 'stored-base'", "model 'stored-ft'")


def test_a_job_asks_the_store_for_each_tensor_ahead(app: FastAPI, store: BlobStore,
                                                    pushed: Pushed, tmp_path: Path) -> None:
    """The codec's read-ahead reaches the store: each hint is a range read soon after, or
    (a local store) mapped (a local store prefetches it into the page cache; S3 ignores
    it). Only a local store's blobs are mapped."""
    base = open_model(app.state.database, store, pushed.base_id)
    finetune = open_model(app.state.database, store, pushed.finetune_id)
    assert isinstance(base, ReadAheadSource)
    compress_bitdelta(base, finetune, tmp_path / "out", workers=1)
    hints: list[Read] = store.hints  # type: ignore[attr-defined]
    reads: list[Read] = store.reads  # type: ignore[attr-defined]
    mapped: list[str] = store.mapped  # type: ignore[attr-defined]
    assert hints
    assert bool(mapped) == isinstance(store, LocalBlobStore)
    for hint in hints:  # read whole, or (past the head) in chunks that cover it, or mapped
        covered = [r for r in reads if r.sha256 == hint.sha256 and r.start < hint.length
                   + hint.start and (r.end or 0) > hint.start]
        assert covered or hint.sha256 in mapped, hint
    store.will_need("0" * 64, 0, 10)  # a blob that is not there: a hint, not an error


class Cancelled(Exception):
    pass


def test_a_cancelled_job_stops_reading_at_once(app: FastAPI, store: BlobStore, pushed: Pushed,
                                               tmp_path: Path) -> None:
    calls = 0

    def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls > 12:
            raise Cancelled

    base = open_model(app.state.database, store, pushed.base_id, checkpoint)
    finetune = open_model(app.state.database, store, pushed.finetune_id, checkpoint)
    with pytest.raises(Cancelled):
        compress_bitdelta(base, finetune, tmp_path / "out", workers=1)
    # every read and every mapping passes the checkpoint first: none after the 12th
    assert len(store.reads) + len(store.mapped) == 12  # type: ignore[attr-defined]
    assert not (tmp_path / "out").exists()


def test_a_deleted_model_is_not_found(app: FastAPI, store: BlobStore) -> None:
    with pytest.raises(ModelNotFound, match="model 4242 was deleted"):
        open_model(app.state.database, store, 4242)


def test_a_blob_shorter_than_its_row_is_refused(app: FastAPI, store: BlobStore,
                                                pushed: Pushed) -> None:
    config = next(f for f in stored_files(app, pushed.base_id) if f.filename == "config.json")
    longer = StoredFile(config.filename, config.sha256, HEAD_BYTES + 100)
    source = BlobSource("model 'cut'", [longer], store)
    with pytest.raises(InvalidModel, match=f"shorter than the {HEAD_BYTES + 100} bytes recorded"):
        source.read_into("config.json", HEAD_BYTES, memoryview(bytearray(100)))
    with pytest.raises(InvalidModel, match=re.escape("model 'cut' has no file 'other.json'")):
        source.read_bytes("other.json")


def test_a_local_stores_blobs_map_to_the_bytes_a_read_gives(app: FastAPI, store: BlobStore,
                                                           pushed: Pushed) -> None:
    """Only a local store's blobs are mapped; a mapping is the bytes a ranged read gives,
    and one past the end, or of a blob whose file is not the recorded size, is refused or
    left to the reads."""
    source = open_model(app.state.database, store, pushed.finetune_id)
    weights = next(f for f in stored_files(app, pushed.finetune_id)
                   if f.filename.endswith(".safetensors"))
    assert source.can_map == isinstance(store, LocalBlobStore)
    offset, length = 1000, weights.size - 2000
    view = source.mapped(weights.filename, offset, length)
    if not isinstance(store, LocalBlobStore):
        assert view is None
        return
    assert view is not None
    read = bytearray(length)
    source.read_into(weights.filename, offset, memoryview(read))
    assert bytes(view) == bytes(read)
    with pytest.raises(InvalidModel, match="ended at byte"):
        source.mapped(weights.filename, offset, weights.size)
    wrong_size = BlobSource("model 'other'", [StoredFile(weights.filename, weights.sha256,
                                                         weights.size + 1)], store)
    assert wrong_size.mapped(weights.filename, 0, 10) is None


class FlakyStore(RecordingLocalStore):
    """Fails its fourth ranged read, as a connection reset mid-model would."""

    def read_into(self, sha256: str, start: int, view: memoryview) -> int:
        if len(self.reads) == 3:
            self.reads.append(Read(sha256, start, start + len(view)))
            raise StorageError("connection reset")
        return super().read_into(sha256, start, view)


def test_a_failed_chunk_fails_the_read_and_calls_off_the_rest(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "blobs")
    store.reads = []
    data = bytes(range(256)) * 1024
    with store.start_upload() as upload:
        upload.write(data)
        staged = upload.finish()
    sha256 = hashlib.sha256(data).hexdigest()
    store.commit(staged, sha256)
    source = BlobSource("flaky", [StoredFile("w.safetensors", sha256, len(data))], store,
                        head_bytes=8, chunk_bytes=1024, parallel=2)
    with pytest.raises(StorageError, match="connection reset"):
        source.read_into("w.safetensors", 8, memoryview(bytearray(len(data) - 8)))
    source.close()
    assert len(store.reads) < 10  # of 256 chunks: the rest were called off
