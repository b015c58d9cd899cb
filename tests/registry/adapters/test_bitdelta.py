"""BitDelta deltas made by the codec, pushed and validated against their base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from safetensors import safe_open
from safetensors.torch import save_file

from compress.bitdelta import compress_bitdelta
from tests.conftest import Tokens
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels


@pytest.fixture(scope="module")
def delta_dir(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("delta") / "delta"
    compress_bitdelta(tiny_models.base, tiny_models.finetune, out)
    return out


def test_push_bitdelta_delta(client: TestClient, tokens: Tokens, tiny_models: TinyModels,
                             delta_dir: Path) -> None:
    register_model(client, tokens.push, "llama-tiny", tiny_models.base)
    register_model(client, tokens.push, "llama-tiny-ft", tiny_models.finetune,
                   kind="finetune", base="llama-tiny")
    draft = client.post("/adapters", json={"name": "ft-1bit", "base": "llama-tiny",
                                           "kind": "bitdelta", "source_model": "llama-tiny-ft"},
                        headers=tokens.push).json()
    for path in delta_dir.iterdir():
        client.put(f"/adapters/{draft['id']}/files/{path.name}", content=path.read_bytes(),
                   headers=tokens.push)
    final = client.post(f"/adapters/{draft['id']}/finalize", headers=tokens.push)
    assert final.status_code == 201, final.text
    adapter = final.json()
    assert adapter["kind"] == "bitdelta"
    assert adapter["source_model"] == "llama-tiny-ft"
    assert adapter["params"]["scale_mode"] == "row"
    assert adapter["params"]["compressed_count"] == 14  # 7 projections × 2 layers
    assert adapter["quality"]["source"] == "report.json pushed with the adapter"
    assert adapter["quality"]["ratio"] > 1
    # fp32 tiny model: the projections shrink ~32×, but norms/embeddings are stored whole
    assert adapter["compression_ratio"] > 2
    listed = client.get("/adapters", params={"base": "llama-tiny", "kind": "bitdelta"},
                        headers=tokens.read).json()
    assert [a["name"] for a in listed["items"]] == ["ft-1bit"]


def test_delta_for_another_base_is_refused(client: TestClient, tokens: Tokens,
                                           tiny_models: TinyModels, delta_dir: Path) -> None:
    register_model(client, tokens.push, "other", tiny_models.other_base)
    response = push_adapter(client, tokens.push, "x", "other", delta_dir, kind="bitdelta")
    assert response.status_code == 422
    assert response.json()["error"] == "InvalidDelta"
    assert "made against a base with manifest digest" in response.json()["detail"]


def test_delta_with_wrong_format_version_is_refused(client: TestClient, tokens: Tokens,
                                                    tiny_models: TinyModels, delta_dir: Path,
                                                    tmp_path: Path) -> None:
    register_model(client, tokens.push, "llama-tiny", tiny_models.base)
    forged = tmp_path / "forged"
    forged.mkdir()
    with safe_open(delta_dir / "delta.safetensors", "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open API)
        metadata = dict(f.metadata())
    save_file(tensors, forged / "delta.safetensors", metadata={**metadata, "format_version": "9"})
    (forged / "config.json").write_text(json.dumps({"model_type": "llama"}))
    response = push_adapter(client, tokens.push, "x", "llama-tiny", forged, kind="bitdelta")
    assert response.status_code == 422
    assert response.json()["error"] == "InvalidDelta"
    assert "version" in response.json()["detail"]
