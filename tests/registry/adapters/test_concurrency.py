"""Races between pushes, against a real server with real threads."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi.testclient import TestClient

from registry.client import DeltahubClient, sha256_of
from tests.conftest import LiveServer, Tokens
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels


def _push(server: LiveServer, token: str, directory: Path, name: str) -> tuple[int, int, bool]:
    client = DeltahubClient(server.url, token)
    try:
        draft = client.create_adapter(name, "llama-tiny", "lora")
        for path in sorted(directory.iterdir()):
            client.upload(f"/adapters/{draft['id']}", path, sha256_of(path))
        adapter, created = client.finalize_adapter(draft["id"])
        return adapter["id"], adapter["version"], created
    finally:
        client.close()


def test_ten_concurrent_pushes_of_one_adapter_make_one_version(
        live_server: LiveServer, client: TestClient, tokens: Tokens,
        tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "llama-tiny", tiny_models.base)
    token = tokens.push["Authorization"].removeprefix("Bearer ")
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda _: _push(live_server, token, tiny_models.lora, "bot"),
                                range(10)))
    assert {(adapter_id, version) for adapter_id, version, _ in results} == {
        (results[0][0], 1)}
    assert sum(created for _, _, created in results) == 1
    listed = client.get("/adapters", params={"name": "bot"}, headers=tokens.read).json()
    assert [a["version"] for a in listed["items"]] == [1]


def test_concurrent_pushes_of_different_content_get_distinct_versions(
        live_server: LiveServer, client: TestClient, tokens: Tokens,
        tiny_models: TinyModels, tmp_path: Path) -> None:
    register_model(client, tokens.push, "llama-tiny", tiny_models.base)
    variants = []
    for i in range(6):
        variant = tmp_path / f"v{i}"
        shutil.copytree(tiny_models.lora, variant)
        config = json.loads((variant / "adapter_config.json").read_text())
        config["lora_alpha"] = 8 + i
        (variant / "adapter_config.json").write_text(json.dumps(config))
        variants.append(variant)
    token = tokens.push["Authorization"].removeprefix("Bearer ")
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda d: _push(live_server, token, d, "bot"), variants))
    assert sorted(version for _, version, _ in results) == [1, 2, 3, 4, 5, 6]
    assert all(created for _, _, created in results)
    latest = client.get("/adapters/bot:latest", headers=tokens.read).json()
    assert latest["version"] == 6
