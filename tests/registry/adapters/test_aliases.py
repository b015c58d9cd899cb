"""Aliases: a bare name means <name>:latest, and aliases other than latest can be removed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels


def _two_versions(client: TestClient, tokens: Tokens, tiny_models: TinyModels,
                  tmp_path: Path) -> None:
    register_model(client, tokens.push, "llama-tiny", tiny_models.base)
    assert push_adapter(client, tokens.push, "bot", "llama-tiny",
                        tiny_models.lora).status_code == 201
    changed = tmp_path / "changed"
    shutil.copytree(tiny_models.lora, changed)
    config = json.loads((changed / "adapter_config.json").read_text())
    config["lora_alpha"] = 16
    (changed / "adapter_config.json").write_text(json.dumps(config))
    assert push_adapter(client, tokens.push, "bot", "llama-tiny", changed).status_code == 201


def _version(client: TestClient, tokens: Tokens, ref: str) -> int:
    version: int = client.get(f"/adapters/{ref}", headers=tokens.read).json()["version"]
    return version


def test_a_bare_name_always_means_latest(client: TestClient, tokens: Tokens,
                                         tiny_models: TinyModels, tmp_path: Path) -> None:
    _two_versions(client, tokens, tiny_models, tmp_path)
    assert _version(client, tokens, "bot") == _version(client, tokens, "bot:latest") == 2
    # Pinning latest back (a rollback) moves what the bare name means with it.
    assert client.put("/adapters/bot@1/aliases/latest", headers=tokens.push).status_code == 200
    assert _version(client, tokens, "bot") == _version(client, tokens, "bot:latest") == 1
    # Deleting the version latest names moves latest to the newest one left.
    assert client.delete("/adapters/bot@1", headers=tokens.admin).status_code == 204
    assert _version(client, tokens, "bot") == _version(client, tokens, "bot:latest") == 2


def test_an_alias_can_be_removed_but_not_latest(client: TestClient, tokens: Tokens,
                                                tiny_models: TinyModels,
                                                tmp_path: Path) -> None:
    _two_versions(client, tokens, tiny_models, tmp_path)
    client.put("/adapters/bot@1/aliases/prod", headers=tokens.push)
    assert client.delete("/adapters/bot/aliases/prod", headers=tokens.read).status_code == 403
    assert client.delete("/adapters/bot@2/aliases/prod", headers=tokens.push).status_code == 204
    assert client.get("/adapters/bot:prod", headers=tokens.read).status_code == 404
    assert client.get("/adapters/bot@1", headers=tokens.read).json()["aliases"] == []
    client.put("/adapters/bot@1/aliases/staging", headers=tokens.push)
    missing = client.delete("/adapters/bot/aliases/stagign", headers=tokens.push)
    assert (missing.status_code, missing.json()["error"]) == (404, "AliasNotFound")
    assert missing.json()["did_you_mean"] == ["staging"]
    reserved = client.delete("/adapters/bot/aliases/latest", headers=tokens.push)
    assert (reserved.status_code, reserved.json()["error"]) == (409, "AliasReserved")
    assert _version(client, tokens, "bot:latest") == 2
