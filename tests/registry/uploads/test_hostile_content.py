"""Hostile file content gets a clear 4xx, never a 500 or a freeze, and nothing is stored.

Each case sends what an attacker would (JSON nested 100,000 deep, NaN, a regex key that
backtracks forever, headers declaring more bytes than allowed, pickles without magic
bytes) and checks the status, the `error` name, the detail, and that no blob, staging
object or file row is left. Every test runs on SQLite and PostgreSQL (the `client`
fixture); negative controls show that ordinary files of each kind still pass.
"""

from __future__ import annotations

import http.client
import json
import pickle
import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save, save_file

from compress.bitdelta import compress_bitdelta
from compress.tensorio import DEFAULT_MAX_HEADER_BYTES, PICKLE_SNIFF_BYTES
from registry.app import create_app
from registry.settings import Settings
from registry.storage.base import BLOB_PREFIX, STAGING_PREFIX
from registry.storage.local import LocalBlobStore
from tests.compress.tensorio.helpers import sentencepiece_model_bytes
from tests.conftest import LiveServer, Tokens
from tests.malformed import assemble, entry, valid_safetensors
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels

# A base module whose name makes `(a+)+$` backtrack exponentially on Python's re.
LONG_MODULE = "model." + "a" * 3000 + "b"
Q_PROJ = "model.layers.0.self_attn.q_proj"
DEEP = 100_000


def deep_json(depth: int = DEEP) -> bytes:
    return ('{"a":' + "[" * depth + "]" * depth + "}").encode()


def lora_config(**extra: Any) -> dict[str, Any]:
    return {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": ["q_proj"],
            **extra}


def lora_weights(module: str, rank: int = 2) -> bytes:
    return save({f"base_model.model.{module}.lora_A.weight": torch.ones(rank, 8),
                 f"base_model.model.{module}.lora_B.weight": torch.ones(8, rank)})


# --- fixtures and drivers -----------------------------------------------------------------------


@pytest.fixture
def base(client: TestClient, tokens: Tokens, tmp_path: Path) -> str:
    """A ready base model with two 8x8 modules, one of them named LONG_MODULE."""
    directory = tmp_path / "base"
    directory.mkdir()
    save_file({f"{Q_PROJ}.weight": torch.zeros(8, 8), f"{LONG_MODULE}.weight": torch.zeros(8, 8)},
              directory / "model.safetensors")
    (directory / "config.json").write_text('{"model_type": "llama"}')
    register_model(client, tokens.push, "base", directory)
    return "base"


def new_adapter(client: TestClient, tokens: Tokens, base: str, kind: str = "lora") -> int:
    draft = client.post("/adapters", json={"name": f"a-{kind}", "base": base, "kind": kind},
                        headers=tokens.push)
    assert draft.status_code == 201, draft.text
    adapter_id: int = draft.json()["id"]
    return adapter_id


def blobs(store: LocalBlobStore) -> set[str]:
    return {o.key for o in store.list_objects(BLOB_PREFIX)}


def assert_refused(response: Any, status: int, error: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    for fragment in fragments:
        assert fragment in body["detail"]


def assert_nothing_stored(client: TestClient, store: LocalBlobStore, tokens: Tokens,
                          before: set[str], adapter_id: int | None = None,
                          model: str | None = None) -> None:
    deadline = time.monotonic() + 10  # a raw-socket upload is aborted as its handler exits
    while list(store.list_objects(STAGING_PREFIX)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(store.list_objects(STAGING_PREFIX)) == []
    assert blobs(store) == before
    if adapter_id is not None:
        assert client.get(f"/adapters/{adapter_id}", headers=tokens.read).json()["files"] == []
    if model is not None:
        assert client.get(f"/models/{model}", headers=tokens.read).json()["files"] == []


@pytest.fixture
def pending_model(client: TestClient, tokens: Tokens) -> str:
    assert client.post("/models", json={"name": "m", "kind": "base"},
                       headers=tokens.push).status_code == 201
    return "m"


# --- 1. JSON nested deep, NaN and Infinity ------------------------------------------------------


def test_adapter_config_nested_100000_deep_is_refused(client: TestClient, store: LocalBlobStore,
                                                      tokens: Tokens, base: str) -> None:
    adapter_id, before = new_adapter(client, tokens, base), blobs(store)
    response = client.put(f"/adapters/{adapter_id}/files/adapter_config.json",
                          content=deep_json(), headers=tokens.push)
    assert_refused(response, 422, "InvalidJSON", "adapter_config.json is not valid JSON: "
                   f"nested {DEEP + 1} deep, over the limit of 64")
    assert_nothing_stored(client, store, tokens, before, adapter_id=adapter_id)


@pytest.mark.parametrize("filename", ["config.json", "model.safetensors.index.json",
                                      "tokenizer.json"])
def test_model_json_nested_100000_deep_is_refused(client: TestClient, store: LocalBlobStore,
                                                  tokens: Tokens, pending_model: str,
                                                  filename: str) -> None:
    response = client.put(f"/models/{pending_model}/files/{filename}", content=deep_json(),
                          headers=tokens.push)
    assert_refused(response, 422, "InvalidJSON", f"nested {DEEP + 1} deep, over the limit of 64")
    assert_nothing_stored(client, store, tokens, set(), model=pending_model)


def test_safetensors_header_nested_100000_deep_is_refused(client: TestClient,
                                                          store: LocalBlobStore, tokens: Tokens,
                                                          pending_model: str) -> None:
    response = client.put(f"/models/{pending_model}/files/model.safetensors",
                          content=assemble(deep_json()), headers=tokens.push)
    assert_refused(response, 422, "InvalidSafetensors", "header is not valid JSON (nested "
                   f"{DEEP + 1} deep, over the limit of 64)")
    assert_nothing_stored(client, store, tokens, set(), model=pending_model)


def test_sharded_model_with_an_ordinary_index_finalizes(client: TestClient, tokens: Tokens,
                                                         tmp_path: Path) -> None:
    # The index is read back at finalize through the same strict loader.
    directory = tmp_path / "sharded"
    directory.mkdir()
    shards = {"model-00001-of-00002.safetensors": "a.weight",
              "model-00002-of-00002.safetensors": "b.weight"}
    for filename, tensor in shards.items():
        save_file({tensor: torch.ones(2, 2)}, directory / filename)
    index = {"metadata": {"total_size": 32}, "weight_map": {t: f for f, t in shards.items()}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    (directory / "config.json").write_text('{"model_type": "llama"}')
    model = register_model(client, tokens.push, "sharded", directory)
    assert model["status"] == "ready"


def test_json_depth_limit_comes_from_settings(settings: Settings, store: LocalBlobStore,
                                              tokens: Tokens) -> None:
    shallow = settings.model_copy(update={"MAX_JSON_DEPTH": 2})
    with TestClient(create_app(shallow, store=store)) as client:
        client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
        refused = client.put("/models/m/files/config.json", content=b'{"a": [[1]]}',
                             headers=tokens.push)
        assert_refused(refused, 422, "InvalidJSON", "nested 3 deep, over the limit of 2")
        ok = client.put("/models/m/files/config.json", content=b'{"a": [1]}',
                        headers=tokens.push)
        assert ok.status_code == 201, ok.text


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]


@pytest.mark.parametrize("token", NON_FINITE)
def test_non_finite_numbers_in_adapter_config_are_refused(
        client: TestClient, store: LocalBlobStore, tokens: Tokens, base: str,
        token: str) -> None:
    adapter_id, before = new_adapter(client, tokens, base), blobs(store)
    body = json.dumps(lora_config()).replace('"lora_alpha": 2', f'"lora_alpha": {token}')
    response = client.put(f"/adapters/{adapter_id}/files/adapter_config.json",
                          content=body.encode(), headers=tokens.push)
    assert_refused(response, 422, "InvalidJSON", "adapter_config.json is not valid JSON: ",
                   "write null or a finite number instead")
    assert_nothing_stored(client, store, tokens, before, adapter_id=adapter_id)


@pytest.mark.parametrize("token", NON_FINITE)
def test_non_finite_numbers_in_report_json_are_refused(
        client: TestClient, store: LocalBlobStore, tokens: Tokens, base: str,
        token: str) -> None:
    adapter_id, before = new_adapter(client, tokens, base, "bitdelta"), blobs(store)
    body = f'{{"ratio": 10.5, "delta_rel_error": {token}}}'
    response = client.put(f"/adapters/{adapter_id}/files/report.json", content=body.encode(),
                          headers=tokens.push)
    assert_refused(response, 422, "InvalidJSON", "report.json is not valid JSON: ")
    assert_nothing_stored(client, store, tokens, before, adapter_id=adapter_id)


def test_lone_surrogate_in_report_json_is_refused(client: TestClient, store: LocalBlobStore,
                                                  tokens: Tokens, base: str) -> None:
    adapter_id, before = new_adapter(client, tokens, base, "bitdelta"), blobs(store)
    response = client.put(f"/adapters/{adapter_id}/files/report.json",
                          content=b'{"note": "\\ud800"}', headers=tokens.push)
    assert_refused(response, 422, "InvalidJSON", "unpaired surrogate escape")
    assert_nothing_stored(client, store, tokens, before, adapter_id=adapter_id)


def test_ordinary_json_files_pass(client: TestClient, tokens: Tokens, base: str) -> None:
    lora = new_adapter(client, tokens, base)
    config = client.put(f"/adapters/{lora}/files/adapter_config.json",
                        content=json.dumps(lora_config()).encode(), headers=tokens.push)
    assert config.status_code == 201, config.text
    delta = new_adapter(client, tokens, base, "bitdelta")
    report = {"ratio": 10.5, "delta_rel_error": 0.7, "weight_rel_error": None,
              "note": "\U0001f600 caf\u00e9", "tensors": [{"name": "a", "shape": [8, 8]}]}
    response = client.put(f"/adapters/{delta}/files/report.json",
                          content=json.dumps(report).encode(), headers=tokens.push)
    assert response.status_code == 201, response.text


# --- 2. client regexes run on RE2 ---------------------------------------------------------------


def upload_lora(client: TestClient, tokens: Tokens, base: str, config: dict[str, Any],
                module: str) -> int:
    """A LoRA draft with its config and weights uploaded, not finalized."""
    adapter_id = new_adapter(client, tokens, base)
    for name, body in [("adapter_config.json", json.dumps(config).encode()),
                       ("adapter_model.safetensors", lora_weights(module))]:
        put = client.put(f"/adapters/{adapter_id}/files/{name}", content=body,
                         headers=tokens.push)
        assert put.status_code == 201, put.text
    return adapter_id


def test_catastrophic_rank_pattern_key_finalizes_at_once(client: TestClient, tokens: Tokens,
                                                         base: str) -> None:
    # On Python's re, `(a+)+$` against LONG_MODULE ("model." + 3000 "a" + "b") takes time
    # exponential in the run of "a": it would never return. The adapter is valid: the key
    # does not match, so the module has the default rank, 2.
    config = lora_config(rank_pattern={"(a+)+$": 8}, alpha_pattern={"(a|aa)+$": 4.0})
    adapter_id = upload_lora(client, tokens, base, config, LONG_MODULE)
    start = time.perf_counter()
    final = client.post(f"/adapters/{adapter_id}/finalize", headers=tokens.push)
    elapsed = time.perf_counter() - start
    assert final.status_code == 201, final.text
    assert final.json()["params"]["ranks"] == [2]
    assert elapsed < 1.0, f"finalize took {elapsed:.2f} s"


def test_rank_pattern_key_re2_cannot_run_is_refused(client: TestClient, tokens: Tokens,
                                                    base: str) -> None:
    adapter_id = upload_lora(client, tokens, base, lora_config(rank_pattern={r"(q)\1_proj": 4}),
                             Q_PROJ)
    final = client.post(f"/adapters/{adapter_id}/finalize", headers=tokens.push)
    assert_refused(final, 422, "InvalidDelta", r"pattern key '(q)\\1_proj' is not a valid "
                   "regular expression for RE2", "write it without backreferences")
    assert client.get(f"/adapters/{adapter_id}", headers=tokens.read).json()["version"] is None


def test_rank_pattern_still_sets_ranks(client: TestClient, tokens: Tokens, base: str) -> None:
    config = lora_config(r=4, rank_pattern={r"layers\.\d+\.self_attn\.q_proj": 2})
    adapter_id = upload_lora(client, tokens, base, config, Q_PROJ)
    final = client.post(f"/adapters/{adapter_id}/finalize", headers=tokens.push)
    assert final.status_code == 201, final.text
    assert final.json()["params"]["ranks"] == [2]


# --- 3. headers over the caps, refused before the body ends -------------------------------------


def partial_put(server: LiveServer, path: str, tokens: Tokens, sent: bytes,
                declared: int | None) -> tuple[int, dict[str, Any]]:
    """Send the request line, headers and `sent`, then stall (never finish the body).

    `declared` is the Content-Length (None: chunked). Returns the status and JSON body the
    server answers with while the client still owes the rest; a server that waits for the
    rest makes the read time out, and the test fail.
    """
    host, port = server.url.removeprefix("http://").split(":")
    framing = (f"Content-Length: {declared}\r\n" if declared is not None
               else "Transfer-Encoding: chunked\r\n")
    head = (f"PUT {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {tokens.push['Authorization']}\r\n{framing}\r\n").encode()
    body = sent if declared is not None else f"{len(sent):x}\r\n".encode() + sent + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


# The first 8 bytes are enough to refuse; the server hands its validator about a megabyte
# at a time (registry/uploads/receive.py), so a little more than that is sent.
FIRST_BATCH = b"\0" * (1024 * 1024 + 4096)


@pytest.mark.parametrize("declared", [60_000_000, None], ids=["content-length", "chunked"])
def test_header_over_the_cap_is_refused_without_the_rest(
        live_server: LiveServer, client: TestClient, store: LocalBlobStore, tokens: Tokens,
        pending_model: str, declared: int | None) -> None:
    header_len = 50_000_000  # under the format's 100 MB, over the 8 MiB cap
    status, body = partial_put(live_server, f"/models/{pending_model}/files/model.safetensors",
                               tokens, struct.pack("<Q", header_len) + b"{" + FIRST_BATCH,
                               declared)  # a header's '{': zeros would be no header (422)
    assert (status, body["error"]) == (413, "PayloadTooLarge")
    assert (f"the header is {header_len} bytes, over the {DEFAULT_MAX_HEADER_BYTES}-byte limit "
            "for headers") in body["detail"]
    assert_nothing_stored(client, store, tokens, set(), model=pending_model)


@pytest.mark.parametrize("declared", [10_000_000, None], ids=["content-length", "chunked"])
def test_header_declaring_2_to_the_40_bytes_is_refused_before_the_body_ends(
        live_server: LiveServer, client: TestClient, store: LocalBlobStore, tokens: Tokens,
        pending_model: str, declared: int | None) -> None:
    header = assemble({"huge": entry("F32", [2**38], 0, 2**40)})
    status, body = partial_put(live_server, f"/models/{pending_model}/files/model.safetensors",
                               tokens, header + FIRST_BATCH, declared)
    assert (status, body["error"]) == (413, "PayloadTooLarge")
    assert (f"its header describes a {len(header) + 2**40}-byte file, over the "
            "50000000000-byte limit for this file") in body["detail"]
    assert_nothing_stored(client, store, tokens, set(), model=pending_model)


def test_header_cap_comes_from_settings(settings: Settings, store: LocalBlobStore,
                                        tokens: Tokens) -> None:
    valid = valid_safetensors()
    header_len = int.from_bytes(valid[:8], "little")
    capped = settings.model_copy(update={"MAX_HEADER_BYTES": header_len - 1})
    with TestClient(create_app(capped, store=store)) as client:
        client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.push)
        response = client.put("/models/m/files/model.safetensors", content=valid,
                              headers=tokens.push)
        assert_refused(response, 413, "PayloadTooLarge", f"the header is {header_len} bytes")
        assert_nothing_stored(client, store, tokens, set(), model="m")


def test_report_json_over_the_report_cap_is_413(client: TestClient, store: LocalBlobStore,
                                                tokens: Tokens, base: str) -> None:
    adapter_id, before = new_adapter(client, tokens, base, "bitdelta"), blobs(store)
    report = b'{"tensors": [' + b'{"name": "x"},' * (15 * 2**20 // 14) + b'{}]}'
    declared = client.put(f"/adapters/{adapter_id}/files/report.json", content=report,
                          headers=tokens.push)
    assert_refused(declared, 413, "PayloadTooLarge", f"{len(report)} bytes, over the "
                   f"{Settings().MAX_REPORT_BYTES}-byte limit")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield from (report[i:i + 2**20] for i in range(0, len(report), 2**20))

    chunked = client.put(f"/adapters/{adapter_id}/files/report.json", content=chunks(),
                         headers=tokens.push)
    assert_refused(chunked, 413, "PayloadTooLarge",
                   f"larger than the {Settings().MAX_REPORT_BYTES}-byte limit")
    assert_nothing_stored(client, store, tokens, before, adapter_id=adapter_id)


@pytest.fixture(scope="module")
def delta_dir(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("delta") / "delta"
    compress_bitdelta(tiny_models.base, tiny_models.finetune, out)
    return out


def test_report_over_a_lowered_cap_is_refused_at_finalize(
        client: TestClient, settings: Settings, store: LocalBlobStore, tokens: Tokens,
        tiny_models: TinyModels, delta_dir: Path) -> None:
    register_model(client, tokens.push, "llama-tiny", tiny_models.base)
    adapter_id = new_adapter(client, tokens, "llama-tiny", "bitdelta")
    for path in delta_dir.iterdir():
        put = client.put(f"/adapters/{adapter_id}/files/{path.name}",
                         content=path.read_bytes(), headers=tokens.push)
        assert put.status_code == 201, put.text
    report_size = (delta_dir / "report.json").stat().st_size
    lowered = settings.model_copy(update={"MAX_REPORT_BYTES": report_size - 1})
    with TestClient(create_app(lowered, store=store)) as strict:
        final = strict.post(f"/adapters/{adapter_id}/finalize", headers=tokens.push)
        assert_refused(final, 422, "ReportTooLarge", f"report.json is {report_size} bytes, "
                       f"over the {report_size - 1}-byte limit for reports")
    final = client.post(f"/adapters/{adapter_id}/finalize", headers=tokens.push)
    assert final.status_code == 201, final.text
    assert final.json()["quality"]["source"] == "report.json pushed with the adapter"


# --- 4. pickles without magic bytes, under any name ---------------------------------------------

STATE = {"model.embed.weight": [[0.25] * 16] * 16, "step": 1200, "optimizer": "adamw"}


@pytest.mark.parametrize("protocol", [0, 1])
@pytest.mark.parametrize("filename", ["README.md", "notes.txt", "tokenizer.model",
                                      "config.json"])
def test_protocol_0_and_1_pickles_are_refused_under_any_name(
        client: TestClient, store: LocalBlobStore, tokens: Tokens, pending_model: str,
        filename: str, protocol: int) -> None:
    data = pickle.dumps(STATE, protocol=protocol)
    response = client.put(f"/models/{pending_model}/files/{filename}", content=data,
                          headers=tokens.push)
    assert_refused(response, 415, "PickleRefused", "a Python pickle (protocol 0 or 1",
                   "never loaded")
    assert_nothing_stored(client, store, tokens, set(), model=pending_model)


@pytest.mark.parametrize("protocol", [0, 1])
def test_long_pickle_is_refused_on_its_first_window(
        live_server: LiveServer, client: TestClient, store: LocalBlobStore, tokens: Tokens,
        pending_model: str, protocol: int) -> None:
    data = pickle.dumps(list(range(400_000)), protocol=protocol)  # megabytes, past the window
    assert len(data) > PICKLE_SNIFF_BYTES + len(FIRST_BATCH)
    status, body = partial_put(live_server, f"/models/{pending_model}/files/tokenizer.model",
                               tokens, data[:len(FIRST_BATCH)], len(data))
    assert (status, body["error"]) == (415, "PickleRefused")
    assert_nothing_stored(client, store, tokens, set(), model=pending_model)


def test_pickle_in_an_adapter_readme_is_refused(client: TestClient, store: LocalBlobStore,
                                                tokens: Tokens, base: str) -> None:
    adapter_id, before = new_adapter(client, tokens, base), blobs(store)
    response = client.put(f"/adapters/{adapter_id}/files/README.md",
                          content=pickle.dumps(STATE, protocol=0), headers=tokens.push)
    assert_refused(response, 415, "PickleRefused")
    assert_nothing_stored(client, store, tokens, before, adapter_id=adapter_id)


ORDINARY_FILES = {
    "README.md": b"# Tiny Llama\n\nN.B. trained on public data. Load it with `transformers`.\n",
    "notes.txt": b"a. first run\nb. second run (lr 2e-4)\n",
    "merges.txt": b"#version: 0.2\n\xc4\xa0 t\n\xc4\xa0 a\n",
    "tokenizer.model": sentencepiece_model_bytes(),
    "random.model": random.Random(7).randbytes(200_000),
    "tokenizer_config.json": json.dumps({"model_max_length": 4096, "pad": None}).encode(),
}


@pytest.mark.parametrize("filename", list(ORDINARY_FILES))
def test_ordinary_text_and_binary_files_pass(client: TestClient, tokens: Tokens,
                                             pending_model: str, filename: str) -> None:
    response = client.put(f"/models/{pending_model}/files/{filename}",
                          content=ORDINARY_FILES[filename], headers=tokens.push)
    assert response.status_code == 201, response.text
