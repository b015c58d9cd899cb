"""Target modules: the same pattern selects the same modules in deltahub and in peft."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists

from compress.errors import InvalidParameter
from compress.targets import (
    DEFAULT_TARGET_MODULES,
    TargetSpec,
    layer_index,
    layer_pattern,
    matches,
    module_kind,
    module_name,
    owner_module,
    select_linear_weights,
)
from compress.tensorio import SAFETENSORS_DTYPES, Manifest, TensorSpec


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.models import TINY_LLAMA

    return LlamaForCausalLM(LlamaConfig(**TINY_LLAMA))


@pytest.fixture(scope="module")
def manifest(llama: torch.nn.Module) -> Manifest:
    return Manifest(TensorSpec(name, SAFETENSORS_DTYPES[t.dtype], tuple(t.shape),
                               "model.safetensors")
                    for name, t in llama.state_dict().items())


def test_module_name() -> None:
    name = "model.layers.0.self_attn.q_proj"
    assert module_name(name + ".weight") == name
    assert module_name("lm_head.weight") == "lm_head"


def test_owner_module_kind_and_layer() -> None:
    assert owner_module("model.layers.3.self_attn.q_proj.bias") == "model.layers.3.self_attn.q_proj"
    assert owner_module("model.norm.weight") == "model.norm"
    assert owner_module("scale") == ""  # a top-level tensor belongs to no module
    assert module_kind("model.layers.3.self_attn.q_proj") == "q_proj"
    assert module_kind("lm_head") == "lm_head"
    assert layer_index("model.layers.12.mlp.up_proj") == 12
    assert layer_index("model.embed_tokens.weight") is None
    assert layer_pattern("model.layers.12.input_layernorm.weight") == (
        "model.layers.*.input_layernorm.weight")
    assert layer_pattern("lm_head.weight") == "lm_head.weight"
    assert module_name("model.norm.bias") == "model.norm.bias"
    assert module_name("weight") == "weight"  # only a ".weight" suffix is removed


@pytest.mark.parametrize(
    ("module", "targets", "expected"),
    [
        ("model.layers.0.self_attn.q_proj", ["q_proj"], True),
        ("q_proj", ["q_proj"], True),
        ("model.layers.0.self_attn.q_proj", ["self_attn.q_proj"], True),
        ("model.layers.0.self_attn.xq_proj", ["q_proj"], False),  # not a dotted suffix
        ("model.layers.0.self_attn.q_proj", ["proj"], False),
        ("model.layers.0.self_attn.q_proj", ["layers.0"], False),  # a prefix is not a target
        ("model.layers.0.self_attn.q_proj", [], False),
        ("model.layers.0.self_attn.q_proj", r".*\.q_proj", True),
        ("model.layers.0.self_attn.q_proj", "q_proj", False),  # a regex must match the whole
        ("model.layers.0.self_attn.q_proj", r"model\.layers\.0\..*", True),
        ("model.layers.10.self_attn.q_proj", r"model\.layers\.1\..*", False),
    ],
)
def test_matches(module: str, targets: TargetSpec, expected: bool) -> None:
    assert matches(module, targets) is expected


SPECS: list[TargetSpec] = [
    list(DEFAULT_TARGET_MODULES),
    ["q_proj", "v_proj"],
    ["self_attn.q_proj"],
    ["layers.1.mlp.down_proj"],
    ["proj"],
    ["lm_head", "embed_tokens"],
    r".*\.(q|v)_proj",
    r"model\.layers\.1\..*",
    "q_proj",
    r".*mlp.*",
]


@pytest.mark.parametrize("targets", SPECS, ids=str)
def test_same_modules_as_peft(llama: torch.nn.Module, targets: TargetSpec) -> None:
    config = LoraConfig(target_modules=targets)
    names = [name for name, _ in llama.named_modules() if name]
    ours = [n for n in names if matches(n, targets)]
    peft = [n for n in names if check_target_module_exists(config, n)]
    assert ours == peft


def test_default_targets_pick_every_llama_projection(manifest: Manifest) -> None:
    chosen = select_linear_weights(manifest)
    expected = sorted(
        f"model.layers.{layer}.{block}.{proj}.weight"
        for layer in range(2)
        for block, projs in [("self_attn", ["q_proj", "k_proj", "v_proj", "o_proj"]),
                             ("mlp", ["gate_proj", "up_proj", "down_proj"])]
        for proj in projs
    )
    assert chosen == expected
    assert all(len(manifest[n].shape) == 2 for n in chosen)


def test_only_two_dimensional_weights_are_selected(manifest: Manifest) -> None:
    # The norms match the regex but are 1-D: never selected.
    chosen = select_linear_weights(manifest, r".*")
    assert "model.norm.weight" not in chosen
    assert "model.layers.0.input_layernorm.weight" not in chosen
    assert "lm_head.weight" in chosen
    assert "model.embed_tokens.weight" in chosen  # 2-D: the caller decides what to target
    assert len(chosen) == 14 + 2


def test_explicit_targets(manifest: Manifest) -> None:
    assert select_linear_weights(manifest, ["lm_head"]) == ["lm_head.weight"]
    assert select_linear_weights(manifest, r"model\.layers\.1\.self_attn\.(q|k)_proj") == [
        "model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.q_proj.weight"]


def test_biases_are_not_weights() -> None:
    manifest = Manifest([TensorSpec("fc.q_proj.bias", "F32", (4, 4), "f"),
                         TensorSpec("fc.q_proj.weight", "F32", (4, 4), "f")])
    assert select_linear_weights(manifest, ["q_proj"]) == ["fc.q_proj.weight"]


@pytest.mark.parametrize("targets", [["c_attn"], r"nothing\..*", []], ids=str)
def test_no_match_is_refused_with_advice(manifest: Manifest, targets: TargetSpec) -> None:
    with pytest.raises(InvalidParameter, match="no 2-D linear weight matches") as info:
        select_linear_weights(manifest, targets)
    assert "module names of your architecture" in str(info.value)


def test_invalid_regex_is_refused(manifest: Manifest) -> None:
    with pytest.raises(InvalidParameter, match=r"'\(q_proj' is not a valid regular expression"):
        select_linear_weights(manifest, "(q_proj")
