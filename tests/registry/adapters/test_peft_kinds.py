"""Every PEFT type peft saves: pushed, listed by kind and peft_type, pulled byte-identical,
loaded by peft with the logits the unpushed model gave; wrong shapes and names refused
with the mismatch named (issue 28)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.peft_adapters import LABELS, MadeAdapter, corrupt, load_logits
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels

BASE = "llama-tiny"


@pytest.fixture
def base(client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> str:
    register_model(client, tokens.push, BASE, tiny_models.base)
    return BASE


def _kind(made: MadeAdapter) -> str:
    return "lora" if made.peft_type == "LORA" else "peft"


@pytest.mark.parametrize("label", LABELS)
def test_each_type_round_trips(client: TestClient, tokens: Tokens, tiny_models: TinyModels,
                               peft_adapters: dict[str, MadeAdapter], base: str, label: str,
                               tmp_path: Path) -> None:
    made = peft_adapters[label]
    pushed = push_adapter(client, tokens.push, label, base, made.path, kind=_kind(made))
    assert pushed.status_code == 201, pushed.text
    adapter = pushed.json()
    assert adapter["kind"] == _kind(made)
    assert adapter["peft"]["peft_type"] == made.peft_type
    assert adapter["peft"]["validated"] is True
    assert adapter["serving"]["peft"] == {"loads": True}

    listed = client.get("/adapters", params={"kind": _kind(made), "peft_type": made.peft_type},
                        headers=tokens.read).json()
    assert [a["name"] for a in listed["items"]] == [label]
    other = "IA3" if made.peft_type != "IA3" else "LORA"
    assert client.get("/adapters", params={"peft_type": other},
                      headers=tokens.read).json()["items"] == []

    pulled = tmp_path / "pulled"
    pulled.mkdir()
    for path in made.path.iterdir():
        answer = client.get(f"/adapters/{label}@1/files/{path.name}", headers=tokens.read)
        assert answer.status_code == 200
        assert answer.content == path.read_bytes(), path.name
        (pulled / path.name).write_bytes(answer.content)
    assert torch.equal(load_logits(tiny_models.base, pulled), made.logits)


@pytest.mark.parametrize("how", ["shape", "name"])
@pytest.mark.parametrize("label", LABELS)
def test_wrong_shape_or_name_is_refused_and_named(
        client: TestClient, tokens: Tokens, peft_adapters: dict[str, MadeAdapter], base: str,
        label: str, how: str, tmp_path: Path) -> None:
    made = peft_adapters[label]
    named = corrupt(made, tmp_path / "bad", how)
    refused = push_adapter(client, tokens.push, label, base, tmp_path / "bad", kind=_kind(made))
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "IncompatibleModels", body
    assert named in body["detail"], body["detail"]
