"""What the registry records of a PEFT adapter (`peft`, `serving`), the types it does not
know, the kind it must be pushed as, and config mismatches named (issue 28)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.peft_adapters import MadeAdapter
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels
from tests.registry.ui.conftest import sign_in

BASE = "llama-tiny"


@pytest.fixture
def base(client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> str:
    register_model(client, tokens.push, BASE, tiny_models.base)
    return BASE


def _with_config(made: MadeAdapter, out: Path, **changes: Any) -> Path:
    shutil.copytree(made.path, out)
    config = json.loads((out / "adapter_config.json").read_text())
    config.update(changes)
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


def test_lora_records_its_options_and_where_it_serves(
        client: TestClient, tokens: Tokens, peft_adapters: dict[str, MadeAdapter],
        base: str) -> None:
    plain = push_adapter(client, tokens.push, "plain", base, peft_adapters["lora"].path).json()
    assert plain["kind"] == "lora"
    assert plain["peft"]["use_dora"] is False
    assert plain["peft"]["rank"] == 4
    assert plain["peft"]["target_modules"] == ["q_proj", "v_proj"] or set(
        plain["peft"]["target_modules"]) == {"q_proj", "v_proj"}
    assert plain["serving"]["vllm"] == {"loads": True, "max_lora_rank": 16}

    dora = push_adapter(client, tokens.push, "dora", base, peft_adapters["dora"].path).json()
    assert dora["kind"] == "lora"
    assert dora["peft"]["use_dora"] is True
    assert dora["serving"]["vllm"]["loads"] is False
    assert "DoRA" in dora["serving"]["vllm"]["why"][0]
    assert "merge_and_unload" in dora["serving"]["otherwise"]

    rslora = push_adapter(client, tokens.push, "rs", base, peft_adapters["rslora"].path).json()
    assert rslora["peft"]["use_rslora"] is True
    assert rslora["peft"]["modules_to_save"] == ["lm_head"]
    assert "modules_to_save" in rslora["serving"]["vllm"]["why"][0]

    shown = client.get("/adapters/dora", headers=tokens.read).json()
    assert shown["peft"] == dora["peft"]
    listed = client.get("/adapters", params={"kind": "lora"}, headers=tokens.read).json()
    assert {a["name"] for a in listed["items"]} == {"plain", "dora", "rs"}


def test_adaloras_per_layer_ranks_come_from_its_rank_pattern(
        client: TestClient, tokens: Tokens, peft_adapters: dict[str, MadeAdapter],
        base: str) -> None:
    made = peft_adapters["adalora"]
    pattern = json.loads((made.path / "adapter_config.json").read_text())["rank_pattern"]
    adapter = push_adapter(client, tokens.push, "ada", base, made.path, kind="peft").json()
    assert adapter["peft"]["ranks"] == sorted({sum(mask) for mask in pattern.values()})
    assert "merge_and_unload" in adapter["serving"]["otherwise"]


def test_prompt_learning_cannot_be_merged_and_says_so(
        client: TestClient, tokens: Tokens, peft_adapters: dict[str, MadeAdapter],
        base: str) -> None:
    adapter = push_adapter(client, tokens.push, "prefix", base, peft_adapters["prefix"].path,
                           kind="peft").json()
    assert adapter["peft"]["token_dim"] == 24  # GQA: 2 key-value heads of 12, not 48
    assert "cannot be merged" in adapter["serving"]["otherwise"]


@pytest.mark.parametrize(("label", "changes", "named"), [
    ("ia3", {"feedforward_modules": ["k_proj"]}, "an attention module scales its output"),
    ("prefix", {"token_dim": 48}, "token_dim is 48 in adapter_config.json, but the base's "
                                  "key/value width"),
    ("prefix", {"num_layers": 3}, "num_layers is 3 in adapter_config.json, but the base's "
                                  "layer count is 2"),
    ("prompt", {"num_virtual_tokens": 6}, "prompt_embeddings is [5, 48], expected [6, 48]"),
    ("vera-prng", {"projection_prng_key": None}, "needs an integer projection_prng_key"),
    ("oft", {"oft_block_size": 12}, "oft_R.weight is [6, 28], expected [4, 66]"),
    ("lora", {"use_dora": True}, "needs lora_magnitude_vector (use_dora is true)"),
])
def test_a_config_that_does_not_match_its_tensors_is_named(
        client: TestClient, tokens: Tokens, peft_adapters: dict[str, MadeAdapter], base: str,
        tmp_path: Path, label: str, changes: dict[str, Any], named: str) -> None:
    made = peft_adapters[label]
    kind = "lora" if made.peft_type == "LORA" else "peft"
    bad = _with_config(made, tmp_path / "bad", **changes)
    refused = push_adapter(client, tokens.push, "bad", base, bad, kind=kind)
    assert refused.status_code == 422, refused.text
    assert named in refused.json()["detail"]


def test_an_unknown_type_is_kept_marked_not_validated(
        client: TestClient, tokens: Tokens, peft_adapters: dict[str, MadeAdapter], base: str,
        tmp_path: Path) -> None:
    future = _with_config(peft_adapters["loha"], tmp_path / "future", peft_type="FUTURE_PEFT")
    adapter = push_adapter(client, tokens.push, "future", base, future, kind="peft").json()
    assert adapter["kind"] == "peft"
    assert adapter["peft"]["validated"] is False
    assert "NOT checked" in adapter["peft"]["note"]
    listed = client.get("/adapters", params={"kind": "peft", "peft_type": "FUTURE_PEFT"},
                        headers=tokens.read).json()
    assert [a["name"] for a in listed["items"]] == ["future"]


def test_pickles_stay_refused_for_kind_peft(client: TestClient, tokens: Tokens,
                                            base: str) -> None:
    draft = client.post("/adapters", json={"name": "pickled", "base": base, "kind": "peft"},
                        headers=tokens.push).json()
    put = client.put(f"/adapters/{draft['id']}/files/adapter_model.bin",
                     content=b"\x80\x04K\x01.", headers=tokens.push)
    assert put.status_code == 415, put.text


def test_the_kind_must_match_the_peft_type(client: TestClient, tokens: Tokens,
                                           peft_adapters: dict[str, MadeAdapter],
                                           base: str) -> None:
    as_lora = push_adapter(client, tokens.push, "ia3", base, peft_adapters["ia3"].path)
    assert as_lora.status_code == 422
    assert as_lora.json()["error"] == "WrongAdapterKind"
    assert "push it with kind 'peft'" in as_lora.json()["detail"]
    as_peft = push_adapter(client, tokens.push, "l", base, peft_adapters["lora"].path,
                           kind="peft")
    assert as_peft.status_code == 422
    assert "push it with kind 'lora'" in as_peft.json()["detail"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_adapter_page_says_where_it_can_be_served(
        client: TestClient, tokens: Tokens, peft_adapters: dict[str, MadeAdapter],
        base: str) -> None:
    ia3 = push_adapter(client, tokens.push, "ia3", base, peft_adapters["ia3"].path,
                       kind="peft").json()
    lora = push_adapter(client, tokens.push, "plain", base, peft_adapters["lora"].path).json()
    sign_in(client, tokens.read)
    page = client.get(f"/ui/adapters/{ia3['id']}").text
    assert "Where it can be served" in page
    assert "<code>IA3</code>" in page
    assert "vLLM loads LoRA adapters only, not IA3" in page
    assert "merge_and_unload" in page
    lineage = client.get(f"/ui/models/{base}", params={"kind": "peft"}).text
    assert f'href="/ui/adapters/{ia3["id"]}"' in lineage
    assert f'href="/ui/adapters/{lora["id"]}"' not in lineage
    page = client.get(f"/ui/adapters/{lora['id']}").text
    assert "✓ loads it as is: --max-lora-rank 16 or more" in page
    assert "--lora-modules plain=./plain-v1" in page
