"""4-bit bases: a bitsandbytes checkpoint registered with its logical shapes, linked to
the base it was quantized from; adapters of either listed as compatible with both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from tests.conftest import Tokens
from tests.models import make_bnb4bit
from tests.registry.api import push_adapter, register_model, upload_model
from tests.registry.conftest import TinyModels

pytest.importorskip("bitsandbytes")

Q = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def q4_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("q4")


def _q4(tiny_models: TinyModels, root: Path, quant_type: str = "nf4",
        double: bool = True) -> Path:
    out = root / f"{quant_type}-{int(double)}"
    if not out.exists():
        make_bnb4bit(tiny_models.base, out, quant_type, double)
    return out


@pytest.mark.parametrize(("quant_type", "double"),
                         [("nf4", True), ("nf4", False), ("fp4", True), ("fp4", False)])
def test_4bit_base_is_registered_with_its_logical_shapes(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, q4_root: Path,
        quant_type: str, double: bool) -> None:
    parent = register_model(client, tokens.push, "tiny", tiny_models.base)
    q4 = register_model(client, tokens.push, "tiny-4bit",
                        _q4(tiny_models, q4_root, quant_type, double), quantized_from="tiny")
    assert q4["kind"] == "base"
    assert q4["quantized_from"] == "tiny"
    assert q4["quantization"] == {"method": "bitsandbytes-4bit", "quant_type": quant_type,
                                  "double_quant": double, "blocksize": 64,
                                  "compute_dtype": "float32"}
    # Its logical layout is the parent's, tensor for tensor; its files are far smaller.
    for key in ("manifest_digest", "tensor_count", "parameter_count", "dtypes"):
        assert q4[key] == parent[key], key
    assert q4["total_bytes"] < parent["total_bytes"]
    shown = client.get("/models/tiny-4bit", headers=tokens.read).json()
    assert (shown["quantization"], shown["quantized_from"]) == (q4["quantization"], "tiny")
    assert client.get("/models/tiny", headers=tokens.read).json()["quantization"] is None


def _broken(good: Path, out: Path, edit: str) -> Path:
    shutil.copytree(good, out)
    tensors = load_file(out / "model.safetensors")
    if edit == "absmax":
        tensors[f"{Q}.absmax"] = tensors[f"{Q}.absmax"][:-1].clone()
    else:
        state = f"{Q}.quant_state.bitsandbytes__nf4"
        tensors[state] = torch.frombuffer(bytearray(b'{"quant_type": "nf4", "shape": '),
                                          dtype=torch.uint8)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.parametrize(("edit", "reason"), [("absmax", "absmax"),
                                              ("quant_state", "not valid JSON")])
def test_malformed_4bit_checkpoint_is_refused_with_the_reason(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, q4_root: Path,
        tmp_path: Path, edit: str, reason: str) -> None:
    register_model(client, tokens.push, "tiny", tiny_models.base)
    bad = _broken(_q4(tiny_models, q4_root), tmp_path / "bad", edit)
    answer = upload_model(client, tokens.push, "bad-4bit", bad, quantized_from="tiny")
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "InvalidModel"
    assert reason in answer.json()["detail"]
    assert Q in answer.json()["detail"]


def test_4bit_base_with_other_shapes_than_its_parent_is_refused(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, tmp_path: Path) -> None:
    register_model(client, tokens.push, "tiny", tiny_models.base)
    other = make_bnb4bit(tiny_models.other_base, tmp_path / "other-4bit")
    answer = upload_model(client, tokens.push, "other-4bit", other, quantized_from="tiny")
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "IncompatibleBase"
    assert len(body["mismatches"]) == 6  # 2 layers × (gate, up, down)
    assert "model.layers.0.mlp.down_proj.weight" in body["detail"]


def test_quantized_from_must_be_a_full_precision_base(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, q4_root: Path) -> None:
    register_model(client, tokens.push, "tiny", tiny_models.base)
    register_model(client, tokens.push, "tiny-ft", tiny_models.finetune, kind="finetune",
                   base="tiny")
    for parent, error in (("tiny-ft", "InvalidRequest"), ("nope", "ModelNotFound")):
        answer = client.post("/models", json={"name": "q", "kind": "base",
                                              "quantized_from": parent}, headers=tokens.push)
        assert (answer.status_code, answer.json()["error"]) == (
            422 if error == "InvalidRequest" else 404, error), answer.text
    # A full-precision checkpoint is no 4-bit base of anything.
    answer = upload_model(client, tokens.push, "not-4bit", tiny_models.base,
                          quantized_from="tiny")
    assert answer.status_code == 422
    assert "quantization_config" in answer.json()["detail"]


def _qlora(tiny_models: TinyModels, out: Path) -> Path:
    """A QLoRA adapter: peft's LoRA on the base loaded 4-bit by transformers (CPU)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model = AutoModelForCausalLM.from_pretrained(
        tiny_models.base, device_map="cpu", quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM",
                                                  target_modules=["q_proj", "down_proj"]))
    peft_model.save_pretrained(out)
    return out


def test_qlora_validates_against_logical_shapes_and_listings_cross_the_family(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, q4_root: Path,
        tmp_path: Path) -> None:
    register_model(client, tokens.push, "tiny", tiny_models.base)
    register_model(client, tokens.push, "tiny-4bit", _q4(tiny_models, q4_root),
                   quantized_from="tiny")
    qlora = _qlora(tiny_models, tmp_path / "qlora")
    assert json.loads((qlora / "adapter_config.json").read_text())["peft_type"] == "LORA"
    pushed = push_adapter(client, tokens.push, "qlora", "tiny-4bit", qlora)
    assert pushed.status_code == 201, pushed.text
    assert push_adapter(client, tokens.push, "lora", "tiny", tiny_models.lora).status_code == 201

    def listed(base: str, compatible: bool) -> dict[str, object]:
        params: dict[str, str | int] = {"base": base}
        if compatible:
            params["compatible"] = 1
        items = client.get("/adapters", params=params, headers=tokens.read).json()["items"]
        return {i["name"]: (i["base"], i["compatible_via"]) for i in items}

    assert listed("tiny-4bit", False) == {"qlora": ("tiny-4bit", None)}
    assert listed("tiny-4bit", True) == {"qlora": ("tiny-4bit", "same base"),
                                         "lora": ("tiny", "quantized from")}
    assert listed("tiny", True) == {"qlora": ("tiny-4bit", "4-bit variant"),
                                    "lora": ("tiny", "same base")}


def test_qlora_with_a_wrong_shape_is_refused(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, q4_root: Path,
        tmp_path: Path) -> None:
    register_model(client, tokens.push, "tiny", tiny_models.base)
    register_model(client, tokens.push, "tiny-4bit", _q4(tiny_models, q4_root),
                   quantized_from="tiny")
    bad = tmp_path / "bad-lora"
    shutil.copytree(tiny_models.lora, bad)
    weights = load_file(bad / "adapter_model.safetensors")
    key = next(k for k in weights if "q_proj.lora_A" in k)
    weights[key] = torch.zeros(4, 24)  # the packed width would be 24 at most; logical is 48
    save_file(weights, bad / "adapter_model.safetensors")
    answer = push_adapter(client, tokens.push, "bad", "tiny-4bit", bad)
    assert answer.status_code == 422, answer.text
    assert "q_proj" in answer.json()["detail"]


def test_a_parent_with_4bit_bases_is_not_deleted(
        client: TestClient, tokens: Tokens, tiny_models: TinyModels, q4_root: Path) -> None:
    register_model(client, tokens.push, "tiny", tiny_models.base)
    register_model(client, tokens.push, "tiny-4bit", _q4(tiny_models, q4_root),
                   quantized_from="tiny")
    answer = client.delete("/models/tiny", headers=tokens.admin)
    assert answer.status_code == 409
    assert "4-bit" in answer.json()["detail"]
    assert client.delete("/models/tiny-4bit", headers=tokens.admin).status_code == 204
    assert client.delete("/models/tiny", headers=tokens.admin).status_code == 204
