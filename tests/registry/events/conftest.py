"""Reading the event feed in tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels

Feed = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def feed(client: TestClient, tokens: Tokens) -> Feed:
    """`feed(types=..., after=...)`: the events GET /events answers, as dicts."""

    def read(**params: Any) -> list[dict[str, Any]]:
        params.setdefault("limit", 100)
        answer = client.get("/events", params=params, headers=tokens.read)
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    return read


@pytest.fixture
def finetune(client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> str:
    """A base and its fine-tune, registered (two `model.registered` events)."""
    register_model(client, tokens.push, "tiny-base", tiny_models.base)
    register_model(client, tokens.push, "tiny-ft", tiny_models.finetune, kind="finetune",
                   base="tiny-base")
    return "tiny-ft"
