"""Adapter drafts heal: a push that declares its files resumes its own draft on a re-run,
concurrent pushes of one name still each get one version, and push may delete a draft."""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from registry.infra.engines import make_session_factory, unit_of_work
from registry.tables import Adapter, Status
from tests.conftest import LiveServer, Tokens
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels

BASE = "llama-tiny"


@pytest.fixture
def base(client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> str:
    register_model(client, tokens.push, BASE, tiny_models.base)
    return BASE


def _files(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


def _start(client: TestClient | httpx.Client, headers: dict[str, str], name: str,
           **body: Any) -> Any:
    return client.post("/adapters", json={"name": name, "base": BASE, "kind": "lora", **body},
                       headers=headers)


def _pending(engine: Engine) -> list[tuple[str, str]]:
    with unit_of_work(make_session_factory(engine)) as session:
        rows = session.execute(select(Adapter.name, Adapter.kind).where(
            Adapter.status == Status.PENDING).order_by(Adapter.id))
        return [(row.name, row.kind.value) for row in rows]


def test_a_rerun_push_resumes_the_draft_for_the_same_files(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, base: str,
        engine: Engine) -> None:
    files = _files(tiny_models.lora)
    first = _start(client, tokens.push, "bot", files=files)
    assert first.status_code == 201
    draft = first.json()
    assert (draft["status"], draft["version"], draft["files"]) == ("pending", None, [])
    config = tiny_models.lora / "adapter_config.json"
    client.put(f"/adapters/{draft['id']}/files/{config.name}", content=config.read_bytes(),
               headers=tokens.push)
    # The push dies here. Its re-run declares the same files and finds what is uploaded.
    again = _start(client, tokens.push, "bot", files=files)
    assert again.status_code == 200
    resumed = again.json()
    assert resumed["id"] == draft["id"]
    assert resumed["files"] == [{"filename": config.name, "sha256": files[config.name],
                                 "size": config.stat().st_size}]
    assert client.get(f"/adapters/{draft['id']}", headers=tokens.read).json()["files"] == (
        resumed["files"])
    for name in files.keys() - {config.name}:
        client.put(f"/adapters/{draft['id']}/files/{name}",
                   content=(tiny_models.lora / name).read_bytes(), headers=tokens.push)
    final = client.post(f"/adapters/{draft['id']}/finalize", json={"files": files},
                        headers=tokens.push)
    assert final.status_code == 201, final.text
    assert final.json()["version"] == 1
    assert _pending(engine) == []  # one version, no draft left
    # A finalized draft is never resumed: the next push starts a new one.
    assert _start(client, tokens.push, "bot", files=files).status_code == 201


def test_pushes_that_declare_no_files_each_get_their_own_draft(
        client: TestClient, tokens: Tokens, base: str, engine: Engine) -> None:
    first, second = (_start(client, tokens.push, "bot") for _ in range(2))
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert _pending(engine) == [("bot", "lora"), ("bot", "lora")]


def test_the_same_files_under_another_kind_replace_the_draft(
        client: TestClient, tokens: Tokens, base: str, engine: Engine) -> None:
    files = {"report.json": "0" * 64}
    assert _start(client, tokens.push, "bot", files=files).status_code == 201
    replaced = client.post("/adapters", json={"name": "bot", "base": BASE, "kind": "bitdelta",
                                              "files": files}, headers=tokens.push)
    assert replaced.status_code == 201
    assert _pending(engine) == [("bot", "bitdelta")]


def test_another_tokens_draft_is_left_alone(client: TestClient, tokens: Tokens, base: str,
                                            engine: Engine) -> None:
    files = {"adapter_config.json": "0" * 64}
    mine = _start(client, tokens.push, "bot", files=files).json()
    theirs = _start(client, tokens.admin, "bot", files=files)
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine["id"]
    assert len(_pending(engine)) == 2


def test_push_deletes_a_draft_and_admin_a_version(client: TestClient, tokens: Tokens,
                                                  tiny_models: TinyModels, base: str) -> None:
    draft = _start(client, tokens.push, "bot").json()
    assert client.delete(f"/adapters/{draft['id']}", headers=tokens.read).status_code == 403
    assert client.delete(f"/adapters/{draft['id']}", headers=tokens.push).status_code == 204
    assert client.get(f"/adapters/{draft['id']}", headers=tokens.read).status_code == 404
    version = push_adapter(client, tokens.push, "bot", base, tiny_models.lora).json()
    refused = client.delete("/adapters/bot@1", headers=tokens.push)
    assert refused.status_code == 403
    assert "needs a token with the 'admin' scope" in refused.json()["detail"]
    assert client.delete(f"/adapters/{version['id']}", headers=tokens.admin).status_code == 204


def test_a_refused_name_in_the_declaration_stores_nothing(
        client: TestClient, tokens: Tokens, base: str, engine: Engine) -> None:
    refused = _start(client, tokens.push, "bot", files={"training_args.bin": "0" * 64})
    assert (refused.status_code, refused.json()["error"]) == (422, "PickleRefused")
    unsupported = _start(client, tokens.push, "bot", files={"optimizer.safetensors": "0" * 64})
    assert (unsupported.status_code, unsupported.json()["error"]) == (422, "UnsupportedFile")
    assert _pending(engine) == []


def test_finalize_checks_the_expected_files_of_a_version_too(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, base: str) -> None:
    files = _files(tiny_models.lora)
    draft = _start(client, tokens.push, "bot", files=files).json()
    for name in files:
        client.put(f"/adapters/{draft['id']}/files/{name}",
                   content=(tiny_models.lora / name).read_bytes(), headers=tokens.push)
    short = {k: v for k, v in files.items() if k != "README.md"}
    refused = client.post(f"/adapters/{draft['id']}/finalize", json={"files": short},
                          headers=tokens.push)
    assert (refused.status_code, refused.json()["error"]) == (409, "DraftChanged")
    assert refused.json()["mismatches"] == ["README.md: uploaded but not expected"]
    assert client.post(f"/adapters/{draft['id']}/finalize", json={"files": files},
                       headers=tokens.push).status_code == 201
    # Finalizing it again (as a concurrent push of the same files would) checks the files.
    assert client.post(f"/adapters/{draft['id']}/finalize", json={"files": files},
                       headers=tokens.push).status_code == 200
    assert client.post(f"/adapters/{draft['id']}/finalize", json={"files": short},
                       headers=tokens.push).status_code == 409


def _declared_push(server: LiveServer, token: str, directory: Path) -> tuple[int, int]:
    """The resumable push recipe of docs/architecture.md ("Drafts"), over real HTTP."""
    files = _files(directory)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        while True:
            started = _start(http, headers, "bot", files=files)
            assert started.status_code in (200, 201), started.text
            draft = started.json()
            held = {f["filename"]: f["sha256"] for f in draft["files"]}
            status = 201
            for name, sha256 in files.items():
                if held.get(name) == sha256:
                    continue
                status = http.put(f"/adapters/{draft['id']}/files/{name}", headers=headers,
                                  content=(directory / name).read_bytes()).status_code
                if status != 201:
                    break  # 409: a concurrent push finalized the draft; 404: it dropped it
            if status == 404:
                continue
            final = http.post(f"/adapters/{draft['id']}/finalize", json={"files": files},
                              headers=headers)
            if final.status_code == 404:
                continue
            assert final.status_code in (200, 201), final.text
            return final.json()["id"], final.json()["version"]


def test_concurrent_declared_pushes_share_a_draft_safely(
        live_server: LiveServer, client: TestClient, tokens: Tokens,
        tiny_models: TinyModels, base: str, engine: Engine, tmp_path: Path) -> None:
    token = tokens.push["Authorization"].removeprefix("Bearer ")
    with ThreadPoolExecutor(max_workers=8) as pool:
        same = list(pool.map(lambda _: _declared_push(live_server, token, tiny_models.lora),
                             range(8)))
    assert {version for _, version in same} == {1}
    assert len({adapter_id for adapter_id, _ in same}) == 1
    variants = []
    for i in range(4):  # one token, other files: separate drafts, separate versions
        variant = tmp_path / f"v{i}"
        shutil.copytree(tiny_models.lora, variant)
        config = json.loads((variant / "adapter_config.json").read_text())
        config["lora_alpha"] = 20 + i
        (variant / "adapter_config.json").write_text(json.dumps(config))
        variants.append(variant)
    with ThreadPoolExecutor(max_workers=4) as pool:
        different = list(pool.map(lambda d: _declared_push(live_server, token, d), variants))
    assert sorted(version for _, version in different) == [2, 3, 4, 5]
    assert _pending(engine) == []
    with unit_of_work(make_session_factory(engine)) as session:
        assert session.scalar(select(func.count()).select_from(Adapter)) == 5


def test_unknown_adapters_and_bases_suggest_close_names(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, base: str) -> None:
    push_adapter(client, tokens.push, "support-bot", base, tiny_models.lora)
    missing = client.get("/adapters/suport-bot", headers=tokens.read)
    assert missing.status_code == 404
    assert missing.json()["did_you_mean"] == ["support-bot"]
    assert "did you mean 'support-bot'?" in missing.json()["detail"]
    by_alias = client.get("/adapters/suport-bot:prod", headers=tokens.read).json()
    assert by_alias["did_you_mean"] == ["support-bot"]
    version = client.get("/adapters/support-bot@9", headers=tokens.read).json()
    assert "did_you_mean" not in version  # the name is right; the version is not
    listing = client.get("/adapters", params={"base": "llama-tiyn"}, headers=tokens.read)
    assert listing.status_code == 404
    assert listing.json()["error"] == "ModelNotFound"
    assert listing.json()["did_you_mean"] == [BASE]
    unknown = _start(client, tokens.push, "x", base="lama-tiny")
    assert unknown.status_code == 404
    assert (unknown.json()["error"], unknown.json()["did_you_mean"]) == ("UnknownBase", [BASE])
