"""What a worker calls: a finalized data set by name, its files on local disk."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from compress.errors import InvalidDataset
from compress.quality import load_eval_data
from registry.datasets.fetch import fetch_dataset_files
from registry.datasets.service import get_final_dataset, needs_tokenizer
from registry.errors import DatasetNotFound
from registry.infra.database import Database
from registry.settings import Settings
from registry.storage.local import LocalBlobStore
from tests.conftest import Tokens
from tests.registry.datasets.helpers import KINDS, push_dataset, token_ids


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    database = Database.from_settings(settings)
    yield database
    database.dispose()


def test_fetch_writes_each_file_checked(client: TestClient, tokens: Tokens, database: Database,
                                        store: LocalBlobStore, tmp_path: Path) -> None:
    push_dataset(client, tokens.push, "calib", KINDS)
    dest = tmp_path / "data"
    paths = fetch_dataset_files(database, store, "calib", dest)
    assert paths == [dest / name for name in sorted(KINDS)]
    for path in paths:
        assert path.read_bytes() == KINDS[path.name]
    # What the worker fetched, the codecs read.
    rows = load_eval_data(dest / "ids.safetensors", tokenizer=None, seq_len=8).rows
    assert rows.shape == (4, 8)

    (dest / "corpus.txt").write_bytes(b"changed locally")
    mtime = (dest / "docs.jsonl").stat().st_mtime_ns
    fetch_dataset_files(database, store, "calib", dest)  # a retried job
    assert (dest / "corpus.txt").read_bytes() == KINDS["corpus.txt"]
    assert (dest / "docs.jsonl").stat().st_mtime_ns == mtime  # right already: kept


def test_fetch_refuses_drafts_and_unknown_names(client: TestClient, tokens: Tokens,
                                                database: Database, store: LocalBlobStore,
                                                tmp_path: Path) -> None:
    client.post("/datasets", json={"name": "draft"}, headers=tokens.push)
    client.put("/datasets/draft/files/a.txt", content=b"text", headers=tokens.push)
    with pytest.raises(DatasetNotFound, match="pending draft"):
        fetch_dataset_files(database, store, "draft", tmp_path / "out")
    with pytest.raises(DatasetNotFound, match="did you mean 'draft'"):
        fetch_dataset_files(database, store, "drat", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fetch_refuses_a_blob_the_store_changed(client: TestClient, tokens: Tokens,
                                                database: Database, store: LocalBlobStore,
                                                tmp_path: Path) -> None:
    push_dataset(client, tokens.push, "calib", {"a.txt": b"the recorded text"})
    sha256 = hashlib.sha256(b"the recorded text").hexdigest()
    blob = next(p for p in store.root.rglob(sha256) if p.is_file())
    blob.chmod(0o644)
    blob.write_bytes(b"the recorded texT")  # bit rot, or a tampered store
    with pytest.raises(InvalidDataset, match="push it again"):
        fetch_dataset_files(database, store, "calib", tmp_path / "out")
    assert not (tmp_path / "out" / "a.txt").exists()


@pytest.mark.parametrize(("files", "text"), [({"ids.safetensors": token_ids()}, False),
                                             ({"a.txt": b"words"}, True),
                                             ({"d.jsonl": b'{"text": "w"}\n'}, True),
                                             (KINDS, True)])
def test_needs_tokenizer_when_any_file_is_text(client: TestClient, tokens: Tokens,
                                               database: Database, files: dict[str, bytes],
                                               text: bool) -> None:
    push_dataset(client, tokens.push, "d", files)
    with database.reading() as session:
        dataset = get_final_dataset(session, "d")
        assert sorted(f.filename for f in dataset.files) == sorted(files)
        assert needs_tokenizer(dataset) is text
