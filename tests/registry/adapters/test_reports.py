"""Lineage and reports on push: `source` checked and stored, report.json and PNG pictures
kept for LoRA and BitDelta alike."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from compress.bitdelta import compress_bitdelta
from compress.lora import SPECTRA_FILE, extract_lora
from tests.conftest import Tokens
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels

BASE, FINETUNE = "llama-tiny", "llama-tiny-ft"


@pytest.fixture(scope="module")
def extracted(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `deltahub extract-lora` writes: the PEFT files, report.json and spectra.png."""
    out = tmp_path_factory.mktemp("extracted") / "lora"
    extract_lora(tiny_models.base, tiny_models.finetune, out, rank=4)
    return out


@pytest.fixture(scope="module")
def delta_with_picture(tiny_models: TinyModels, extracted: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("delta") / "delta"
    compress_bitdelta(tiny_models.base, tiny_models.finetune, out)
    shutil.copy(extracted / SPECTRA_FILE, out / "errors.png")
    return out


@pytest.fixture
def models(client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, BASE, tiny_models.base)
    register_model(client, tokens.push, FINETUNE, tiny_models.finetune, kind="finetune",
                   base=BASE)


def _push(client: TestClient, headers: dict[str, str], directory: Path, kind: str = "lora",
          **body: Any) -> dict[str, Any]:
    draft = client.post("/adapters", json={"name": "bot", "base": BASE, "kind": kind, **body},
                        headers=headers)
    assert draft.status_code == 201, draft.text
    for path in sorted(directory.iterdir()):
        put = client.put(f"/adapters/{draft.json()['id']}/files/{path.name}",
                         content=path.read_bytes(), headers=headers)
        assert put.status_code == 201, (path.name, put.text)
    final = client.post(f"/adapters/{draft.json()['id']}/finalize", headers=headers)
    assert final.status_code == 201, final.text
    result: dict[str, Any] = final.json()
    return result


def test_an_extracted_lora_keeps_its_report_pictures_and_source(
        client: TestClient, tokens: Tokens, models: None, extracted: Path) -> None:
    assert {p.name for p in extracted.iterdir()} >= {"report.json", SPECTRA_FILE}
    adapter = _push(client, tokens.push, extracted, source=FINETUNE)
    assert adapter["source_model"] == FINETUNE
    report = json.loads((extracted / "report.json").read_text())
    quality = adapter["quality"]
    assert quality["source"] == "report.json pushed with the adapter"
    assert quality["format"] == "deltahub-lora-report"
    assert quality["delta_rel_error_max"] == report["summary"]["max_error"]
    weight = report["summary"]["weight_rel_error_max"]
    assert quality["weight_rel_error_max"] == weight
    assert 0 < weight < report["summary"]["max_error"]  # relative to W_ft, not to ΔW
    assert quality["summary"] == report["summary"]
    assert "modules" not in quality  # per-module detail stays in the file
    assert quality["pictures"] == [SPECTRA_FILE]
    for name in ("report.json", SPECTRA_FILE):
        pulled = client.get(f"/adapters/bot@1/files/{name}", headers=tokens.read)
        assert pulled.content == (extracted / name).read_bytes()
    listed = client.get("/adapters", params={"base": BASE}, headers=tokens.read).json()
    [item] = listed["items"]
    assert item["source_model"] == FINETUNE
    assert item["quality"]["delta_rel_error_max"] == report["summary"]["max_error"]


def test_a_bitdelta_push_keeps_its_pictures(client: TestClient, tokens: Tokens, models: None,
                                            delta_with_picture: Path) -> None:
    adapter = _push(client, tokens.push, delta_with_picture, kind="bitdelta",
                    source_model=FINETUNE)  # the field's first name still works
    assert adapter["source_model"] == FINETUNE
    assert adapter["quality"]["pictures"] == ["errors.png"]
    assert "tensors" not in adapter["quality"]


def test_source_must_be_a_finalized_finetune_of_the_base(
        client: TestClient, tokens: Tokens, models: None, tiny_models: TinyModels) -> None:
    def start(source: str) -> Any:
        return client.post("/adapters", json={"name": "bot", "base": BASE, "kind": "lora",
                                              "source": source}, headers=tokens.push)

    unknown = start("llama-tiny-fr")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "UnknownSource")
    assert unknown.json()["did_you_mean"][0] == FINETUNE
    a_base = start(BASE)
    assert (a_base.status_code, a_base.json()["error"]) == (422, "InvalidSource")
    assert "is a base model" in a_base.json()["detail"]
    register_model(client, tokens.push, "other", tiny_models.other_base)
    client.post("/models", json={"name": "other-ft", "kind": "finetune", "base": "other"},
                headers=tokens.push)
    pending = start("other-ft")
    assert (pending.status_code, pending.json()["error"]) == (409, "NotReady")
    for path in tiny_models.other_base.iterdir():
        client.put(f"/models/other-ft/files/{path.name}", content=path.read_bytes(),
                   headers=tokens.push)
    assert client.post("/models/other-ft/finalize", headers=tokens.push).status_code == 200
    elsewhere = start("other-ft")
    assert (elsewhere.status_code, elsewhere.json()["error"]) == (422, "InvalidSource")
    assert "a fine-tune of 'other', not of 'llama-tiny'" in elsewhere.json()["detail"]
    both = client.post("/adapters", json={"name": "bot", "base": BASE, "kind": "lora",
                                          "source": FINETUNE, "source_model": FINETUNE},
                       headers=tokens.push)
    assert both.status_code == 422
    assert client.get("/adapters", params={"name": "bot"}, headers=tokens.read).json()[
        "items"] == []


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body))


@pytest.mark.parametrize(("content", "why"), [
    (b"GIF89a" + b"\0" * 64, "PNG signature"),
    (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)),
     "before its IEND chunk"),
    (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 4, 8, 2, 0, 0, 0))
     + _chunk(b"IEND", b""), "0x4 pixels"),
    (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
     + _chunk(b"IEND", b"")[:-1] + b"\0", "fails its CRC"),
    (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
     + _chunk(b"IEND", b"") + b"trailing", "bytes follow its IEND"),
])
def test_a_picture_that_is_no_png_is_refused(client: TestClient, tokens: Tokens,
                                            models: None, content: bytes, why: str) -> None:
    draft = client.post("/adapters", json={"name": "bot", "base": BASE, "kind": "lora"},
                        headers=tokens.push).json()
    refused = client.put(f"/adapters/{draft['id']}/files/spectra.png", content=content,
                         headers=tokens.push)
    assert refused.status_code == 422
    assert refused.json()["error"] == "InvalidContent"
    assert why in refused.json()["detail"]
    assert client.get(f"/adapters/{draft['id']}", headers=tokens.read).json()["files"] == []


def test_pictures_and_reports_have_their_size_limits(
        client: TestClient, tokens: Tokens, models: None, extracted: Path) -> None:
    draft = client.post("/adapters", json={"name": "bot", "base": BASE, "kind": "lora"},
                        headers=tokens.push).json()
    png = (extracted / SPECTRA_FILE).read_bytes()
    big = client.put(f"/adapters/{draft['id']}/files/big.png",
                     content=png + b"\0" * (4 * 2**20), headers=tokens.push)
    assert big.status_code == 413
    report = client.put(f"/adapters/{draft['id']}/files/report.json",
                        content=b'{"a": "' + b"x" * (2 * 2**20) + b'"}', headers=tokens.push)
    assert report.status_code == 413
    not_json = client.put(f"/adapters/{draft['id']}/files/report.json",
                          content=b'{"a": NaN}', headers=tokens.push)
    assert not_json.status_code == 422
    assert client.get(f"/adapters/{draft['id']}", headers=tokens.read).json()["files"] == []


def test_a_report_that_is_no_object_is_refused_at_finalize(
        client: TestClient, tokens: Tokens, models: None, tiny_models: TinyModels,
        tmp_path: Path) -> None:
    directory = tmp_path / "lora"
    shutil.copytree(tiny_models.lora, directory)
    (directory / "report.json").write_text("[1, 2]")
    draft = client.post("/adapters", json={"name": "bot", "base": BASE, "kind": "lora"},
                        headers=tokens.push).json()
    for path in directory.iterdir():
        client.put(f"/adapters/{draft['id']}/files/{path.name}", content=path.read_bytes(),
                   headers=tokens.push)
    refused = client.post(f"/adapters/{draft['id']}/finalize", headers=tokens.push)
    assert (refused.status_code, refused.json()["error"]) == (422, "InvalidReport")
