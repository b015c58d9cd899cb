"""GET /adapters?sort=gain_kept: best measured first, unmeasured last, ties newest first,
keyset-paged across every page without a repeat or a gap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from compress.lora import extract_lora
from tests.conftest import Tokens
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels

BASE = "llama-tiny"
# name -> the gain kept its report states (None: no figure; the string is not a number)
GAINS: dict[str, object] = {"a": 0.5, "b": None, "c": 0.93, "d": 0.5, "e": "high",
                            "f": 1.02, "g": None, "h": -0.2}


@pytest.fixture(scope="module")
def lora_dir(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lora") / "lora"
    extract_lora(tiny_models.base, tiny_models.finetune, out, rank=2)
    return out


@pytest.fixture
def pushed(client: TestClient, tokens: Tokens, tiny_models: TinyModels, lora_dir: Path,
           tmp_path: Path) -> dict[str, int]:
    """One version per name of GAINS, pushed in its order; their ids."""
    register_model(client, tokens.push, BASE, tiny_models.base)
    ids = {}
    for name, gain in GAINS.items():
        directory = tmp_path / name
        shutil.copytree(lora_dir, directory)
        report = json.loads((directory / "report.json").read_text())
        report.pop("gain_kept", None)
        if gain is not None:
            report["gain_kept"] = gain
        (directory / "report.json").write_text(json.dumps(report))
        final = push_adapter(client, tokens.push, name, BASE, directory)
        assert final.status_code == 201, final.text
        ids[name] = final.json()["id"]
    return ids


def _walk(client: TestClient, tokens: Tokens, limit: int, **params: str) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        query = {"base": BASE, "limit": str(limit), **params}
        if token:
            query["page_token"] = token
        page = client.get("/adapters", params=query, headers=tokens.read)
        assert page.status_code == 200, page.text
        names += [item["name"] for item in page.json()["items"]]
        token = page.json()["next_page_token"]
        if token is None:
            return names


def test_sorted_by_gain_kept_across_pages(client: TestClient, tokens: Tokens,
                                          pushed: dict[str, int]) -> None:
    # Ties (a, d at 0.5) and the unmeasured (b, g, and e whose figure is not a number)
    # come newest first.
    expected = ["f", "c", "d", "a", "h", "g", "e", "b"]
    for limit in (1, 2, 3, 8):
        assert _walk(client, tokens, limit, sort="gain_kept") == expected
    assert _walk(client, tokens, 3) == list(reversed(GAINS))  # the default: newest first


def test_listed_items_show_their_gain_kept(client: TestClient, tokens: Tokens,
                                           pushed: dict[str, int]) -> None:
    items = client.get("/adapters", params={"base": BASE, "sort": "gain_kept", "limit": 2},
                       headers=tokens.read).json()["items"]
    assert [item["quality"]["gain_kept"] for item in items] == [1.02, 0.93]


def test_a_cursor_of_one_order_is_refused_by_the_other(client: TestClient, tokens: Tokens,
                                                       pushed: dict[str, int]) -> None:
    newest = client.get("/adapters", params={"base": BASE, "limit": 2},
                        headers=tokens.read).json()["next_page_token"]
    replay = client.get("/adapters", params={"base": BASE, "limit": 2, "sort": "gain_kept",
                                             "page_token": newest}, headers=tokens.read)
    assert replay.status_code == 422
    assert replay.json()["error"] == "InvalidPageToken"
    assert "other filters" in replay.json()["detail"]


def test_an_unknown_sort_is_a_422_naming_the_choices(client: TestClient, tokens: Tokens,
                                                     pushed: dict[str, int]) -> None:
    response = client.get("/adapters", params={"sort": "best"}, headers=tokens.read)
    assert response.status_code == 422
    assert "gain_kept" in response.text
