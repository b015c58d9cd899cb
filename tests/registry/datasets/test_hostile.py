"""Data set files that must be refused, each with a precise 4xx and nothing stored:
no blob object, no blob row, no file row, no staging leftover."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save
from sqlalchemy import Engine

from registry.app import create_app
from registry.settings import Settings
from registry.storage.local import LocalBlobStore
from tests.conftest import LiveServer, Tokens
from tests.malformed import PICKLE_CASES, nan_safetensors
from tests.registry.datasets.helpers import TEXT, assert_nothing_stored, token_ids
from tests.registry.uploads.helpers import PATH_TRICKS, raw


@dataclass(frozen=True)
class Hostile:
    id: str
    filename: str
    data: bytes
    status: int
    error: str
    fragment: str  # in the detail: the message says what was wrong


CASES = [
    Hostile("pickle_by_name", "data.pkl", b"plain text", 415, "PickleRefused", "pickle"),
    Hostile("torch_file_by_name", "ids.pt", b"plain text", 415, "PickleRefused", "pickle"),
    Hostile("pickle_as_txt", "corpus.txt", pickle.dumps({"text": "x"}, protocol=2), 415,
            "PickleRefused", "pickle"),
    Hostile("protocol_0_pickle_as_txt", "corpus.txt", pickle.dumps(["a", 1], protocol=0),
            415, "PickleRefused", "pickle"),
    Hostile("pickle_as_jsonl", "docs.jsonl", pickle.dumps([1], protocol=4), 415,
            "PickleRefused", "pickle"),
    *(Hostile(f"{case.id}_as_safetensors", "ids.safetensors", case.data, 415,
              "PickleRefused", "") for case in PICKLE_CASES),
    Hostile("unknown_kind", "data.csv", b"a,b\n", 415, "UnsupportedFile", ".jsonl"),
    Hostile("bad_utf8", "corpus.txt", b"caf\xe9 au lait", 422, "InvalidDataset",
            "not UTF-8"),
    Hostile("empty_txt", "corpus.txt", b"", 422, "InvalidDataset", "no text"),
    Hostile("whitespace_txt", "corpus.txt", b" \n\t\n", 422, "InvalidDataset", "no text"),
    Hostile("empty_jsonl", "docs.jsonl", b"", 422, "InvalidDataset", "no text"),
    Hostile("jsonl_without_text", "docs.jsonl", b'{"text": "ok"}\n{"body": "no"}\n', 422,
            "InvalidDataset", "line 2"),
    Hostile("jsonl_text_not_a_string", "docs.jsonl", b'{"text": 5}\n', 422,
            "InvalidDataset", "it is a number"),
    Hostile("jsonl_not_json", "docs.jsonl", b'{"text": "ok"}\n{text: no}\n', 422,
            "InvalidDataset", "line 2"),
    Hostile("jsonl_nan", "docs.jsonl", b'{"text": "a", "w": NaN}\n', 422, "InvalidDataset",
            "line 1"),
    Hostile("empty_safetensors", "ids.safetensors", b"", 422, "InvalidSafetensors", ""),
    Hostile("float_ids", "ids.safetensors", token_ids(dtype=torch.float32), 422,
            "InvalidDataset", "dtype F32"),
    Hostile("bool_ids", "ids.safetensors", token_ids(dtype=torch.bool), 422,
            "InvalidDataset", "dtype BOOL"),
    Hostile("negative_ids", "ids.safetensors",
            save({"input_ids": torch.tensor([[1, -3, 2]])}), 422, "InvalidDataset",
            "negative"),
    Hostile("ids_of_rank_1", "ids.safetensors", save({"input_ids": torch.arange(8)}), 422,
            "InvalidDataset", "[n, seq]"),
    Hostile("ids_of_rank_3", "ids.safetensors",
            save({"input_ids": torch.zeros(2, 2, 2, dtype=torch.int64)}), 422,
            "InvalidDataset", "[n, seq]"),
    Hostile("no_input_ids", "ids.safetensors", save({"tokens": torch.ones(2, 4)}), 422,
            "InvalidDataset", "no tensor 'input_ids'"),
    Hostile("padded_rows", "ids.safetensors",
            token_ids(attention_mask=torch.tensor([[1] * 8, [1] * 4 + [0] * 4] * 2)), 422,
            "InvalidDataset", "padded"),
    Hostile("nan_beside_ids", "ids.safetensors",
            token_ids(weights=torch.tensor([1.0, float("nan")])), 422, "NonFiniteTensor",
            "'weights'"),
    Hostile("nan_tensor", "ids.safetensors", nan_safetensors(), 422, "NonFiniteTensor", ""),
]


@pytest.fixture
def draft(client: TestClient, tokens: Tokens) -> str:
    assert client.post("/datasets", json={"name": "d"}, headers=tokens.push).status_code == 201
    return "d"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_file_is_refused_and_nothing_is_stored(client: TestClient, tokens: Tokens,
                                                       engine: Engine, store: LocalBlobStore,
                                                       draft: str, case: Hostile) -> None:
    response = client.put(f"/datasets/{draft}/files/{case.filename}", content=case.data,
                          headers=tokens.push)
    assert response.status_code == case.status, response.text
    assert response.json()["error"] == case.error
    assert case.fragment in response.json()["detail"]
    assert_nothing_stored(engine, store)
    assert client.get(f"/datasets/{draft}", headers=tokens.read).json()["files"] == []


def test_a_declared_file_that_would_be_refused_stores_nothing(client: TestClient,
                                                             tokens: Tokens, engine: Engine,
                                                             store: LocalBlobStore) -> None:
    for name in ("weights.bin", "data.csv"):
        response = client.post("/datasets", json={"name": "d", "files": {name: "0" * 64}},
                               headers=tokens.push)
        assert response.status_code == 422, name
        assert name in response.json()["detail"]
    assert client.get("/datasets", headers=tokens.read).json()["items"] == []
    assert_nothing_stored(engine, store)


@pytest.mark.parametrize("trick", [*PATH_TRICKS, "../x.txt", "..%2fx.txt"])
def test_path_tricks_in_file_names(live_server: LiveServer, tokens: Tokens, engine: Engine,
                                   store: LocalBlobStore, draft: str, trick: str) -> None:
    answer = raw(live_server, "PUT", f"/datasets/{draft}/files/{trick}", tokens.push, TEXT)
    assert answer == (422, "InvalidFilename"), answer
    assert_nothing_stored(engine, store)
    # The same token, draft and body under a plain name are taken: the refusal above
    # was the name's, not the scope's or the draft's.
    assert raw(live_server, "PUT", f"/datasets/{draft}/files/x.txt", tokens.push,
               TEXT)[0] == 201


@pytest.fixture
def small_client(settings: Settings, store: LocalBlobStore) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"MAX_DATASET_BYTES": 64}), store=store)
    with TestClient(app) as client:
        yield client
    app.state.database.dispose()


def test_files_over_max_dataset_bytes_are_refused(small_client: TestClient, tokens: Tokens,
                                                 engine: Engine,
                                                 store: LocalBlobStore) -> None:
    small_client.post("/datasets", json={"name": "d"}, headers=tokens.push)
    big = b"word " * 13  # 65 bytes: one over
    declared = small_client.put("/datasets/d/files/a.txt", content=big, headers=tokens.push)
    assert (declared.status_code, declared.json()["error"]) == (413, "PayloadTooLarge")
    assert "64-byte limit" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield big[:40]
        yield big[40:]

    counted = small_client.put("/datasets/d/files/a.txt", content=chunks(),
                               headers=tokens.push)
    assert (counted.status_code, counted.json()["error"]) == (413, "PayloadTooLarge")
    assert_nothing_stored(engine, store)
    fits = small_client.put("/datasets/d/files/a.txt", content=big[:64], headers=tokens.push)
    assert fits.status_code == 201, fits.text


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "%2e%2e", "", "x" * 129, "42", "a\x00b"])
def test_bad_dataset_names_are_refused(client: TestClient, tokens: Tokens, engine: Engine,
                                       store: LocalBlobStore, name: str) -> None:
    response = client.post("/datasets", json={"name": name}, headers=tokens.push)
    assert (response.status_code, response.json()["error"]) == (422, "InvalidName")
    assert client.get("/datasets", headers=tokens.read).json()["items"] == []
    assert_nothing_stored(engine, store)
