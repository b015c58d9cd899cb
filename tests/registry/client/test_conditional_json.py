"""The client revalidates the JSON it asked for before: a repeated GET sends the ETag it
got, a 304 returns the answer it kept, and a change brings the new answer."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from registry.client import DeltahubClient
from tests.conftest import Tokens
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels


def test_a_repeated_listing_is_revalidated(client: TestClient, tokens: Tokens,
                                           tiny_models: TinyModels) -> None:
    register_model(client, tokens.push, "tiny-base", tiny_models.base)
    assert push_adapter(client, tokens.push, "bot", "tiny-base",
                        tiny_models.lora).status_code == 201
    client.headers.update(tokens.admin)
    statuses: list[tuple[int, str | None]] = []

    def seen(response: httpx.Response) -> None:
        statuses.append((response.status_code, response.request.headers.get("if-none-match")))

    client.event_hooks["response"].append(seen)
    api = DeltahubClient(http=client)

    first = list(api.list_adapters(base="tiny-base"))
    again = list(api.list_adapters(base="tiny-base"))
    assert again == first
    assert statuses[0][1] is None
    assert statuses[1][0] == 304
    assert statuses[1][1]  # the tag it was given

    again[0]["name"] = "changed by the caller"  # a kept answer is not shared with callers
    assert list(api.list_adapters(base="tiny-base")) == first

    api.set_alias("bot@1", "prod")
    moved = list(api.list_adapters(base="tiny-base"))
    assert statuses[-1][0] == 200
    assert "prod" in moved[0]["aliases"]
