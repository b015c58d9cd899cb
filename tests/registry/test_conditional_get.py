"""Conditional GETs: every JSON GET sends a strong ETag and `Cache-Control: no-cache`, and
answers a matching `If-None-Match` with an empty 304; a change to what a listing shows
changes its tag."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from registry.settings import Settings
from tests.conftest import Tokens
from tests.registry.api import push_adapter, push_dataset, register_model
from tests.registry.conftest import TinyModels

LISTING = "/adapters?base=tiny-base"


@dataclass(frozen=True)
class Seeded:
    urls: dict[str, str]  # OpenAPI path -> a URL of it that answers 200


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A webhook to a loopback address may be registered (it is never sent to)."""
    return settings.model_copy(update={"WEBHOOK_ALLOW_PRIVATE": True})


@pytest.fixture
def seeded(client: TestClient, tokens: Tokens, tiny_models: TinyModels,
           tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    register_model(client, tokens.push, "tiny-base", tiny_models.base)
    register_model(client, tokens.push, "tiny-ft", tiny_models.finetune, kind="finetune",
                   base="tiny-base")
    # two versions of one name: the second's config differs
    for lora in (tiny_models.lora, _other_revision(tiny_models, tmp_path_factory)):
        pushed = push_adapter(client, tokens.push, "support", "tiny-base", lora)
        assert pushed.status_code == 201, pushed.text
    data = tmp_path_factory.mktemp("data") / "train.jsonl"
    data.write_text('{"text": "hello"}\n')
    push_dataset(client, tokens.push, "texts", data)
    job = client.post("/models/tiny-ft/compress?method=bitdelta", json={},
                      headers=tokens.compress)
    assert job.status_code == 202, job.text
    # a disabled one: nothing is sent to it (the address is never connected to)
    webhook = client.post("/webhooks", json={"url": "http://127.0.0.1:9/hook",
                                             "enabled": False}, headers=tokens.admin)
    assert webhook.status_code == 201, webhook.text
    hook = webhook.json()["id"]
    return Seeded({
        "/adapters": LISTING, "/adapters/{ref}": "/adapters/support@1",
        "/models": "/models", "/models/{model}": "/models/tiny-base",
        "/datasets": "/datasets", "/datasets/{name}": "/datasets/texts",
        "/jobs": "/jobs", "/jobs/{job_id}": f"/jobs/{job.json()['id']}",
        "/events": "/events", "/tokens": "/tokens",
        "/webhooks": "/webhooks", "/webhooks/{webhook_id}": f"/webhooks/{hook}",
        "/webhooks/{webhook_id}/deliveries": f"/webhooks/{hook}/deliveries",
    })


def _other_revision(models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LoRA again with another `revision` in its config: a new version."""
    copy = tmp_path_factory.mktemp("lora-v2")
    shutil.copytree(models.lora, copy, dirs_exist_ok=True)
    path = copy / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "revision": "v2"}))
    return copy


def _get(client: TestClient, url: str, headers: dict[str, str], tag: str | None = None
         ) -> Response:
    return client.get(url, headers={**headers, **({"If-None-Match": tag} if tag else {})})


def _json_gets(client: TestClient) -> set[str]:
    """Every GET of the API whose success is a JSON body (files and the probes aside)."""
    document = client.get("/openapi.json").json()
    found = set()
    for path, operations in document["paths"].items():
        get = operations.get("get")
        if get is None or not get.get("security"):  # the public probes aside
            continue
        if "application/json" in get["responses"].get("200", {}).get("content", {}):
            found.add(path)
    return found


def test_every_json_get_answers_304_to_its_own_tag(client: TestClient, tokens: Tokens,
                                                   seeded: Seeded) -> None:
    untested = _json_gets(client) - set(seeded.urls)
    assert not untested, f"JSON GETs this test does not cover: {sorted(untested)}"
    for path, url in seeded.urls.items():
        first = _get(client, url, tokens.admin)
        assert first.status_code == 200, (path, first.text)
        tag = first.headers.get("etag")
        assert tag, path
        assert tag.startswith('"'), (path, tag)  # strong: no W/
        assert tag.endswith('"'), (path, tag)
        assert first.headers["cache-control"] == "no-cache", path
        assert _get(client, url, tokens.admin).headers["etag"] == tag, f"{path}: unstable"
        again = _get(client, url, tokens.admin, tag)
        assert again.status_code == 304, (path, again.status_code)
        assert again.content == b"", path
        assert again.headers["etag"] == tag, path
        # A list, a weak form of the tag and `*` match too (RFC 9110, If-None-Match)
        for header in (f'"other", {tag}', f"W/{tag}", "*"):
            assert _get(client, url, tokens.admin, header).status_code == 304, (path, header)
        assert _get(client, url, tokens.admin, '"other"').status_code == 200, path


def test_a_listing_tag_changes_with_every_change_it_shows(
        client: TestClient, tokens: Tokens, seeded: Seeded) -> None:
    seen = [_get(client, LISTING, tokens.read).headers["etag"]]

    def changed() -> None:
        tag = _get(client, LISTING, tokens.read).headers["etag"]
        assert tag not in seen, "the listing changed but kept its tag"
        assert _get(client, LISTING, tokens.read, seen[-1]).status_code == 200
        seen.append(tag)

    moved = client.put("/adapters/support@1/aliases/prod", headers=tokens.push)
    assert moved.status_code == 200, moved.text
    changed()
    moved = client.put("/adapters/support@2/aliases/prod", headers=tokens.push)  # a move
    assert moved.status_code == 200, moved.text
    changed()
    removed = client.delete("/adapters/support/aliases/prod", headers=tokens.push)
    assert removed.status_code == 204, removed.text
    changed()
    deleted = client.delete("/adapters/support@1", headers=tokens.admin)
    assert deleted.status_code == 204, deleted.text
    changed()
    assert [a["version"] for a in _get(client, LISTING, tokens.read).json()["items"]] == [2]


def test_the_tag_depends_on_the_query(client: TestClient, tokens: Tokens,
                                      seeded: Seeded) -> None:
    one = _get(client, LISTING, tokens.read).headers["etag"]
    other = _get(client, f"{LISTING}&limit=1", tokens.read)
    assert other.headers["etag"] != one
    assert _get(client, f"{LISTING}&limit=1", tokens.read, one).status_code == 200


def test_a_revoked_token_gets_401_not_304(client: TestClient, tokens: Tokens,
                                          seeded: Seeded) -> None:
    created = client.post("/tokens", json={"name": "poller", "scopes": ["read"]},
                          headers=tokens.admin)
    headers = {"Authorization": f"Bearer {created.json()['token']}"}
    tag = _get(client, LISTING, headers).headers["etag"]
    assert _get(client, LISTING, headers, tag).status_code == 304
    revoked = client.delete(f"/tokens/{created.json()['id']}", headers=tokens.admin)
    assert revoked.status_code == 200
    refused = _get(client, LISTING, headers, tag)
    assert refused.status_code == 401, refused.text
    assert _get(client, LISTING, {}, tag).status_code == 401


def test_a_job_tag_follows_its_progress(client: TestClient, tokens: Tokens,
                                        seeded: Seeded) -> None:
    url = seeded.urls["/jobs/{job_id}"]
    tag = _get(client, url, tokens.read).headers["etag"]
    cancelled = client.post(f"{url}/cancel", headers=tokens.compress)
    assert cancelled.status_code == 200, cancelled.text
    after = _get(client, url, tokens.read, tag)
    assert after.status_code == 200
    assert after.json()["status"] == "cancelled"


def test_a_draft_is_tagged_by_its_content(client: TestClient, tokens: Tokens,
                                          seeded: Seeded, tiny_models: TinyModels) -> None:
    """A draft's uploads write no event: its tag must follow its files, not the registry's
    newest change (and it is never answered from the cache of finalized answers)."""
    draft = client.post("/adapters", json={"name": "wip", "base": "tiny-base",
                                           "kind": "lora"}, headers=tokens.push)
    assert draft.status_code == 201, draft.text
    url = f"/adapters/{draft.json()['id']}"
    before = _get(client, url, tokens.read)
    assert before.json()["status"] == "pending"
    config = (tiny_models.lora / "adapter_config.json").read_bytes()
    put = client.put(f"{url}/files/adapter_config.json", content=config, headers=tokens.push)
    assert put.status_code == 201, put.text
    after = _get(client, url, tokens.read, before.headers["etag"])
    assert after.status_code == 200
    assert [f["filename"] for f in after.json()["files"]] == ["adapter_config.json"]
    assert _get(client, url, tokens.read, after.headers["etag"]).status_code == 304


def test_a_route_refusing_its_parameters_checks_the_token_first(client: TestClient,
                                                                tokens: Tokens) -> None:
    """The feed checks `types` before its read (and its token check): without a token, a
    401 all the same, and nothing about the parameters."""
    refused = client.get("/events?types=no.such.type")
    assert refused.status_code == 401, refused.text
    assert client.get("/events?types=no.such.type", headers=tokens.read).status_code == 422
