"""Name -> registry -> cache (`AdapterSource`), and following moved aliases and deleted
versions (`Follower`), against a live registry; the engine's side is a recorded unload."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.client import NO_RETRY, ClientError, DeltahubClient, Push, sha256_of
from registry.serving.vllm.cache import AdapterCache
from registry.serving.vllm.follow import Follower
from registry.serving.vllm.rules import Served
from registry.serving.vllm.source import AdapterSource
from tests.conftest import LiveServer, Tokens
from tests.registry.conftest import TinyModels
from tests.s3server import free_port

LORA_FILES = ("adapter_config.json", "adapter_model.safetensors")


class Unloads:
    """The engine's side: which names were unloaded."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, model: str) -> bool:
        self.names.append(model)
        return True


@pytest.fixture
def client(live_server: LiveServer, tokens: Tokens, tiny_models: TinyModels
           ) -> Iterator[DeltahubClient]:
    secret = tokens.admin["Authorization"].removeprefix("Bearer ")
    client = DeltahubClient(live_server.url, secret, retry=NO_RETRY)
    paths = [tiny_models.base / "config.json", tiny_models.base / "model.safetensors"]
    Push(client, paths, {p.name: sha256_of(p) for p in paths}).model("tiny-llama")
    yield client
    client.close()


def _push(client: DeltahubClient, directory: Path, name: str) -> dict[str, Any]:
    paths = [directory / f for f in LORA_FILES]
    adapter, _ = Push(client, paths, {p.name: sha256_of(p) for p in paths}
                      ).adapter(name, "tiny-llama", "lora")
    return adapter


@pytest.fixture
def second_lora(tiny_models: TinyModels, tmp_path: Path) -> Path:
    """The tiny LoRA with another alpha: other content, so another version."""
    out = tmp_path / "lora-2"
    shutil.copytree(tiny_models.lora, out)
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 16}))
    return out


def _source(client: DeltahubClient, tmp_path: Path) -> AdapterSource:
    return AdapterSource(client, AdapterCache(tmp_path / "cache", 10**8),
                         Served("tiny-llama", max_lora_rank=16))


def test_resolve_brings_the_versions_files_into_the_cache(
        client: DeltahubClient, tiny_models: TinyModels, tmp_path: Path) -> None:
    pushed = _push(client, tiny_models.lora, "support-bot")
    client.set_alias(str(pushed["id"]), "prod")

    resolved = _source(client, tmp_path).resolve("support-bot:prod")

    assert resolved is not None
    assert resolved.name == "support-bot@1"
    assert resolved.path == tmp_path / "cache" / "entries" / pushed["content_digest"]
    for name in LORA_FILES:
        assert sha256_of(resolved.path / name) == sha256_of(tiny_models.lora / name)


def test_a_missing_adapter_is_one_log_line(client: DeltahubClient, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert _source(client, tmp_path).resolve("support-bot:prod") is None

    assert [r.getMessage() for r in caplog.records] == [
        f"deltahub: not serving 'support-bot:prod': the registry at {client.http.base_url} "
        "has no such adapter (no adapter 'support-bot:prod'; refer to one as <id>, <name>, "
        "<name>@<version> or <name>:<alias>, or list them with GET /adapters)"]
    assert not (tmp_path / "cache").exists()


def test_an_unreachable_registry_is_one_log_line(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    client = DeltahubClient(f"http://127.0.0.1:{free_port()}", retry=NO_RETRY)

    with caplog.at_level(logging.WARNING):
        assert _source(client, tmp_path).resolve("support-bot") is None

    assert len(caplog.records) == 1
    assert "the registry did not answer" in caplog.records[0].getMessage()
    assert "check DELTAHUB_URL" in caplog.records[0].getMessage()


def test_a_moved_alias_is_unloaded_once_and_its_new_target_cached(
        client: DeltahubClient, tiny_models: TinyModels, second_lora: Path,
        tmp_path: Path) -> None:
    v1 = _push(client, tiny_models.lora, "support-bot")
    client.set_alias(str(v1["id"]), "prod")
    source, unloads = _source(client, tmp_path), Unloads()
    follower = Follower(source, unloads)
    served = source.resolve("support-bot:prod")
    assert served is not None
    follower.serving("support-bot:prod", served)

    follower.check_all()  # nothing moved
    assert unloads.names == []

    v2 = _push(client, second_lora, "support-bot")
    client.set_alias(str(v2["id"]), "prod")
    follower.check_all()

    assert unloads.names == ["support-bot:prod"]
    assert follower.names() == []
    assert not served.lease.held
    cached = {e.digest for e in source.cache.entries()}
    assert cached == {v1["content_digest"], v2["content_digest"]}  # v2 ready for the reload
    follower.check_all()
    assert unloads.names == ["support-bot:prod"]


def test_a_deleted_version_is_unloaded(client: DeltahubClient, tiny_models: TinyModels,
                                       second_lora: Path, tmp_path: Path) -> None:
    _push(client, tiny_models.lora, "support-bot")
    v2 = _push(client, second_lora, "support-bot")
    source, unloads = _source(client, tmp_path), Unloads()
    follower = Follower(source, unloads)
    for model in ("support-bot@1", "support-bot@2"):
        resolved = source.resolve(model)
        assert resolved is not None
        follower.serving(model, resolved)

    client.delete_adapter(v2["id"])
    follower.check_all()

    assert unloads.names == ["support-bot@2"]
    assert follower.names() == ["support-bot@1"]


def test_an_unreachable_registry_keeps_what_is_served(
        client: DeltahubClient, tiny_models: TinyModels, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    _push(client, tiny_models.lora, "support-bot")
    source, unloads = _source(client, tmp_path), Unloads()
    follower = Follower(source, unloads)
    resolved = source.resolve("support-bot")
    assert resolved is not None
    follower.serving("support-bot", resolved)
    source.client = DeltahubClient(f"http://127.0.0.1:{free_port()}", retry=NO_RETRY)

    with caplog.at_level(logging.WARNING):
        follower.check_all()

    assert unloads.names == []
    assert follower.names() == ["support-bot"]
    assert "serving support-bot@1 until the registry answers" in caplog.text


class Following:
    """`Follower.run` in a thread of its own, stopped at the end."""

    def __init__(self, follower: Follower, every_seconds: float) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=follower.run, args=(every_seconds, self.stop),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _eventually(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class NoFeed(DeltahubClient):
    """A registry from before the feed: `GET /events` is a 404."""

    def events(self, after: int = 0, **_: Any) -> dict[str, Any]:
        raise ClientError(404, "NotFound", "no route /events", method="GET", url="/events")


def test_the_feed_unloads_a_moved_alias_without_waiting_for_the_interval(
        client: DeltahubClient, tiny_models: TinyModels, second_lora: Path,
        tmp_path: Path) -> None:
    v1 = _push(client, tiny_models.lora, "support-bot")
    client.set_alias(str(v1["id"]), "prod")
    other = _push(client, second_lora, "other-bot")
    source, unloads = _source(client, tmp_path), Unloads()
    follower = Follower(source, unloads, feed_wait_seconds=2)
    for model in ("support-bot:prod", "other-bot"):
        resolved = source.resolve(model)
        assert resolved is not None
        follower.serving(model, resolved)
    following = Following(follower, every_seconds=3600)  # only the feed can act in time
    try:
        v2 = _push(client, second_lora, "support-bot")
        client.set_alias(str(v2["id"]), "prod")
        assert _eventually(lambda: unloads.names == ["support-bot:prod"]), unloads.names
        client.delete_adapter(other["id"])
        assert _eventually(lambda: "other-bot" in unloads.names), unloads.names
    finally:
        following.close()
    assert unloads.names == ["support-bot:prod", "other-bot"]
    assert follower.names() == []


def test_without_a_feed_it_falls_back_to_the_interval(
        client: DeltahubClient, tiny_models: TinyModels, second_lora: Path,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    v1 = _push(client, tiny_models.lora, "support-bot")
    client.set_alias(str(v1["id"]), "prod")
    secret = client.http.headers["Authorization"].removeprefix("Bearer ")
    old = NoFeed(str(client.http.base_url), secret, retry=NO_RETRY)
    source, unloads = _source(old, tmp_path), Unloads()
    follower = Follower(source, unloads, feed_wait_seconds=2)
    resolved = source.resolve("support-bot:prod")
    assert resolved is not None
    follower.serving("support-bot:prod", resolved)
    with caplog.at_level(logging.WARNING):
        following = Following(follower, every_seconds=0.2)
        try:
            v2 = _push(client, second_lora, "support-bot")
            client.set_alias(str(v2["id"]), "prod")
            assert _eventually(lambda: unloads.names == ["support-bot:prod"]), unloads.names
        finally:
            following.close()
        old.close()
    warnings = [r.getMessage() for r in caplog.records
                if "cannot follow the registry's event feed" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not once per interval
    assert "re-checking served adapters every 0.2 s instead" in warnings[0]
