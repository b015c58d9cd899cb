"""The PEFT LoRA format: adapters written by the real `peft` library pass the base checks."""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils.other import get_pattern_key
from peft.utils.warning import PeftWarning
from transformers import LlamaConfig, LlamaForCausalLM

from compress.errors import IncompatibleModels, InvalidDelta
from compress.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoraAdapterConfig,
    LoraAdapterSummary,
    check_lora_against_base,
    is_adapter_file,
    lora_key,
    parse_adapter_config,
    saved_module_key,
)
from compress.lora.format import MAX_PATTERN_KEY_CHARS, MAX_PATTERN_KEYS, pattern_value
from compress.tensorio import Checkpoint, Manifest, TensorEntry, read_header
from tests.models import TINY_LLAMA, make_tiny_llama

Q0 = "model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    path = make_tiny_llama(tmp_path_factory.mktemp("peft") / "base")
    with Checkpoint.open(path) as ckpt:
        return ckpt.manifest


def save_adapter(out: Path, config: LoraConfig, model_config: dict[str, Any] | None = None,
                 **save_kwargs: Any) -> dict[str, int]:
    """Write a real peft adapter for a tiny Llama; return each adapted module's rank."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**(model_config or TINY_LLAMA)))
    peft_model = get_peft_model(model, config)
    with warnings.catch_warnings():
        # peft announces that it saves the embedding when embed_tokens is targeted.
        warnings.filterwarnings("ignore", message=".*save_embedding_layers.*", category=UserWarning)
        peft_model.save_pretrained(out, **save_kwargs)
    prefix = "base_model.model."
    return {name.removeprefix(prefix): module.r["default"]
            for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)}


def load(out: Path) -> tuple[LoraAdapterConfig, dict[str, TensorEntry]]:
    config = parse_adapter_config(json.loads((out / ADAPTER_CONFIG).read_text()))
    return config, dict(read_header(out / ADAPTER_WEIGHTS).tensors)


def check(out: Path, base: Manifest) -> LoraAdapterSummary:
    config, tensors = load(out)
    return check_lora_against_base(config, tensors, base)


def test_plain_adapter(tmp_path: Path, base: Manifest) -> None:
    ranks = save_adapter(tmp_path, LoraConfig(r=4, lora_alpha=8,
                                              target_modules=["q_proj", "v_proj"]))
    assert all(is_adapter_file(p.name) for p in tmp_path.iterdir())  # what peft wrote
    summary = check(tmp_path, base)
    assert summary.ranks == ranks
    assert sorted(summary.ranks) == [f"model.layers.{i}.self_attn.{p}"
                                     for i in range(2) for p in ("q_proj", "v_proj")]
    assert set(summary.ranks.values()) == {4}
    assert summary.r == 4
    assert summary.lora_alpha == 8.0
    assert sorted(summary.target_modules) == ["q_proj", "v_proj"]
    assert summary.saved_tensors == []
    # q_proj: A [4, 48] + B [48, 4]; v_proj (2 kv heads of 12): A [4, 48] + B [24, 4]
    assert summary.parameter_count == 2 * (4 * 48 + 48 * 4 + 4 * 48 + 24 * 4)
    params = summary.to_params()
    assert params["ranks"] == [4]
    assert params["module_count"] == 4
    assert json.loads(json.dumps(params)) == params


def test_rank_pattern_alpha_pattern_and_modules_to_save(tmp_path: Path, base: Manifest) -> None:
    config = LoraConfig(
        r=4, lora_alpha=16,
        target_modules=["q_proj", "v_proj", "down_proj", "gate_proj"],
        rank_pattern={"down_proj": 2, "layers.1.self_attn.q_proj": 6,
                      "^model.layers.0.mlp.gate_proj": 3},
        alpha_pattern={"v_proj": 3},
        modules_to_save=["lm_head"],
    )
    ranks = save_adapter(tmp_path, config)
    summary = check(tmp_path, base)
    assert summary.ranks == ranks  # the same rank for every module as peft gave it
    assert ranks["model.layers.0.mlp.down_proj"] == 2
    assert ranks["model.layers.1.self_attn.q_proj"] == 6
    assert ranks[Q0] == 4
    assert summary.to_params()["ranks"] == sorted(set(ranks.values()))
    assert summary.saved_tensors == ["lm_head.weight"]
    parsed, _ = load(tmp_path)
    assert parsed.alpha_of("model.layers.0.self_attn.v_proj") == 3.0
    assert parsed.alpha_of(Q0) == 16.0
    assert parsed.modules_to_save == ["lm_head"]


def test_embedding_target(tmp_path: Path, base: Manifest) -> None:
    ranks = save_adapter(tmp_path, LoraConfig(r=5, target_modules=["embed_tokens", "q_proj"]))
    _, tensors = load(tmp_path)
    assert "base_model.model.model.embed_tokens.lora_embedding_A" in tensors
    # peft also saves the base embedding, under the wrapped layer's name.
    assert "base_model.model.model.embed_tokens.base_layer.weight" in tensors
    summary = check(tmp_path, base)
    assert summary.ranks == ranks
    assert summary.ranks["model.embed_tokens"] == 5
    assert summary.saved_tensors == ["model.embed_tokens.weight"]


def test_lora_bias(tmp_path: Path, base: Manifest) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ranks = save_adapter(tmp_path, LoraConfig(r=2, target_modules=["o_proj"],
                                                  lora_bias=True))
    assert any(issubclass(w.category, PeftWarning) and "lora_bias=True" in str(w.message)
               for w in caught)  # Llama's o_proj has no bias: peft says so, and saves one
    _, tensors = load(tmp_path)
    assert f"base_model.model.{Q0.replace('q_proj', 'o_proj')}.lora_B.bias" in tensors
    assert check(tmp_path, base).ranks == ranks


def test_regex_target_modules(tmp_path: Path, base: Manifest) -> None:
    ranks = save_adapter(tmp_path, LoraConfig(r=3, target_modules=r".*layers\.1\.mlp\.up_proj"))
    summary = check(tmp_path, base)
    assert summary.ranks == ranks == {"model.layers.1.mlp.up_proj": 3}
    assert summary.target_modules == r".*layers\.1\.mlp\.up_proj"


# --- a base of another shape --------------------------------------------------------------------


def test_base_with_other_shapes_names_each_bad_module(tmp_path: Path) -> None:
    save_adapter(tmp_path / "adapter", LoraConfig(
        r=4, target_modules=["q_proj", "v_proj", "down_proj"], modules_to_save=["lm_head"]))
    other = {**TINY_LLAMA, "intermediate_size": 128, "vocab_size": 100}
    other_base = make_tiny_llama(tmp_path / "other")
    (other_base / "model.safetensors").unlink()
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**other)).save_pretrained(other_base)
    with Checkpoint.open(other_base) as ckpt:
        manifest = ckpt.manifest
    with pytest.raises(IncompatibleModels) as info:
        check(tmp_path / "adapter", manifest)
    assert info.value.mismatches == [
        "'lm_head.weight' has shape [96, 48], base has [100, 48]",
        "model.layers.0.mlp.down_proj.lora_A.weight is [4, 120], expected [4, 128] "
        "(r=4, in=128)",
        "model.layers.1.mlp.down_proj.lora_A.weight is [4, 120], expected [4, 128] "
        "(r=4, in=128)",
    ]
    assert str(info.value).startswith("the LoRA adapter does not fit its base: ")


def test_base_with_other_hidden_size_names_every_module(tmp_path: Path) -> None:
    save_adapter(tmp_path / "adapter", LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, "hidden_size": 64}))
    manifest = Manifest.from_dict({"tensors": [
        {"name": n, "dtype": "F32", "shape": list(t.shape), "file": "m.safetensors"}
        for n, t in model.state_dict().items()]})
    with pytest.raises(IncompatibleModels) as info:
        check(tmp_path / "adapter", manifest)
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            module = f"model.layers.{layer}.self_attn.{proj}"
            assert any(m.startswith(f"{module}.lora_A.weight is [4, 48], expected [4, 64]")
                       for m in info.value.mismatches), module
    # every factor: lora_A [4, 48] -> [4, 64]; lora_B [48, 4] -> [64, 4] and [24, 4] -> [32, 4]
    assert len(info.value.mismatches) == 8


# --- hand-made tensors --------------------------------------------------------------------------


def e(name: str, shape: tuple[int, ...], dtype: str = "F32") -> tuple[str, TensorEntry]:
    return name, TensorEntry(name, dtype, shape, 0, 0)


CONFIG = parse_adapter_config({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                               "target_modules": ["q_proj"]})


@pytest.mark.parametrize(("name", "accepted"), [
    ("adapter_config.json", True), ("adapter_model.safetensors", True), ("README.md", True),
    ("adapter_model.bin", False), ("report.json", False), ("spectra.png", False),
    ("delta.safetensors", False), ("training_args.bin", False), ("config.json", False)])
def test_the_files_of_an_adapter(name: str, accepted: bool) -> None:
    assert is_adapter_file(name) is accepted


def test_key_helpers() -> None:
    assert lora_key(Q0, "lora_A") == f"base_model.model.{Q0}.lora_A.weight"
    assert saved_module_key("lm_head.weight") == "base_model.model.lm_head.weight"


def test_hand_made_problems_are_each_named(base: Manifest) -> None:
    tensors = dict([
        e(lora_key(Q0, "lora_A"), (4, 48)),  # lora_B missing
        e("model.layers.0.self_attn.k_proj.lora_A.weight", (4, 48)),  # no prefix
        e(lora_key("model.layers.1.self_attn.q_proj", "lora_A"), (4, 48), dtype="I32"),
        e(lora_key("model.nothing", "lora_A"), (4, 48)),
        e(lora_key("model.nothing", "lora_B"), (48, 4)),
        e(lora_key("model.norm", "lora_A"), (4, 48)),
        e(lora_key("model.norm", "lora_B"), (48, 4)),
        e("base_model.model.model.mystery.weight", (2,)),
        e(lora_key("model.layers.1.mlp.up_proj", "lora_A"), (4, 48)),
        e(lora_key("model.layers.1.mlp.up_proj", "lora_B"), (120, 4)),
        e("base_model.model.model.layers.1.mlp.up_proj.lora_B.bias", (119,)),
        e("base_model.model.model.layers.1.mlp.up_proj.lora_C.weight", (1,)),
    ])
    with pytest.raises(IncompatibleModels) as info:
        check_lora_against_base(CONFIG, tensors, base)
    message = str(info.value)
    for fragment in [
        f"module {Q0!r} needs both lora_A.weight and lora_B.weight",
        "'model.layers.0.self_attn.k_proj.lora_A.weight' does not start with "
        "'base_model.model.' (not a peft key)",
        "has dtype I32; adapter weights must be floats",
        "module 'model.nothing' has LoRA factors but the base has no 'model.nothing.weight'",
        "module 'model.norm': base weight is [48], not a matrix",
        "'model.mystery.weight' is neither a LoRA factor nor a tensor of the base",
        "model.layers.1.mlp.up_proj.lora_B.bias is [119], expected [120]",
        "'model.layers.1.mlp.up_proj.lora_C.weight' is neither a LoRA factor",
    ]:
        assert fragment in message, fragment


def test_wrong_rank_is_named(base: Manifest) -> None:
    tensors = dict([e(lora_key(Q0, "lora_A"), (8, 48)), e(lora_key(Q0, "lora_B"), (48, 8))])
    with pytest.raises(IncompatibleModels) as info:
        check_lora_against_base(CONFIG, tensors, base)
    assert info.value.mismatches == [
        f"{Q0}.lora_A.weight is [8, 48], expected [4, 48] (r=4, in=48)",
        f"{Q0}.lora_B.weight is [48, 8], expected [48, 4] (out=48, r=4)",
    ]


def test_fan_in_fan_out_swaps_the_base_dimensions() -> None:
    # GPT-2's Conv1D stores [in, out]: c_attn is [48, 144].
    base = Manifest.from_dict({"tensors": [
        {"name": "h.0.attn.c_attn.weight", "dtype": "F32", "shape": [48, 144], "file": "m"}]})
    config = parse_adapter_config({"peft_type": "LORA", "r": 2, "lora_alpha": 2,
                                   "target_modules": ["c_attn"], "fan_in_fan_out": True})
    tensors = dict([e(lora_key("h.0.attn.c_attn", "lora_A"), (2, 48)),
                    e(lora_key("h.0.attn.c_attn", "lora_B"), (144, 2))])
    assert check_lora_against_base(config, tensors, base).ranks == {"h.0.attn.c_attn": 2}


def test_no_lora_tensors_is_invalid(base: Manifest) -> None:
    with pytest.raises(InvalidDelta, match="has no lora_A/lora_B tensors"):
        check_lora_against_base(CONFIG, dict([e("base_model.model.lm_head.weight", (96, 48))]),
                                base)
    with pytest.raises(InvalidDelta, match="has no lora_A/lora_B tensors"):
        check_lora_against_base(CONFIG, {}, base)


# --- adapter_config.json ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("cfg")
    save_adapter(out, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    config: dict[str, Any] = json.loads((out / ADAPTER_CONFIG).read_text())
    return config


def test_regex_pattern_keys_are_kept(real_config: dict[str, Any]) -> None:
    parsed = parse_adapter_config({**real_config,
                                   "rank_pattern": {r"layers\.\d+\.self_attn\.q_proj": 8},
                                   "alpha_pattern": {"q_proj": 2.5}})
    assert parsed.rank_of(Q0) == 8
    assert parsed.rank_of("model.layers.0.self_attn.v_proj") == 4
    assert parsed.alpha_of(Q0) == 2.5


def test_real_config_parses(real_config: dict[str, Any]) -> None:
    parsed = parse_adapter_config(real_config)
    assert (parsed.r, parsed.lora_alpha, parsed.target_modules) == (4, 8.0, ["q_proj"])
    assert parsed.rank_pattern == {}
    assert parsed.modules_to_save == []
    assert parsed.fan_in_fan_out is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"peft_type": "IA3"}, "has peft_type 'IA3'; deltahub registers LoRA adapters"),
        ({"peft_type": None}, "has peft_type None"),
        ({"r": 0}, "r must be a positive integer, got 0"),
        ({"r": -4}, "r must be a positive integer, got -4"),
        ({"r": 4.0}, "r must be a positive integer, got 4.0"),
        ({"r": True}, "r must be a positive integer, got True"),
        ({"r": "8"}, "r must be a positive integer, got '8'"),
        ({"r": None}, "r must be a positive integer, got None"),
        ({"lora_alpha": 0}, "lora_alpha must be a positive number, got 0"),
        ({"lora_alpha": -1.5}, "lora_alpha must be a positive number"),
        ({"lora_alpha": True}, "lora_alpha must be a positive number"),
        ({"target_modules": None}, "target_modules must be a list of names or a regex"),
        ({"target_modules": ["q_proj", 3]}, "target_modules must be a list"),
        ({"rank_pattern": {"q_proj": 0}}, "rank_pattern must map names to positive integers"),
        ({"rank_pattern": ["q_proj"]}, "rank_pattern must map names to positive integers"),
        ({"alpha_pattern": [1]}, "alpha_pattern must map names to numbers"),
        ({"alpha_pattern": {"q_proj": "16"}}, "alpha_pattern must map names to numbers"),
        ({"alpha_pattern": {"q_proj": False}}, "alpha_pattern must map names to numbers"),
        ({"rank_pattern": {"q_proj(": 2}}, "pattern key 'q_proj(' is not a valid regular"),
        ({"alpha_pattern": {"[v": 2.0}}, "pattern key '[v' is not a valid regular expression"),
        ({"modules_to_save": "lm_head"}, "modules_to_save must be a list of names"),
    ],
)
def test_bad_configs_are_invalid(real_config: dict[str, Any], change: dict[str, Any],
                                 message: str) -> None:
    with pytest.raises(InvalidDelta, match=re.escape(message)):
        parse_adapter_config({**real_config, **change})


@pytest.mark.parametrize("raw", [[], "LORA", None, 3])
def test_config_must_be_an_object(raw: object) -> None:
    with pytest.raises(InvalidDelta, match=r"adapter_config\.json must hold a JSON object"):
        parse_adapter_config(raw)


def test_real_dora_adapter_checks_its_magnitude_vector(tmp_path: Path, base: Manifest) -> None:
    """DoRA (issue 28): lora_magnitude_vector is [out]; without use_dora it is refused."""
    save_adapter(tmp_path, LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    config, tensors = load(tmp_path)
    assert check_lora_against_base(config, tensors, base, dora=True).ranks
    with pytest.raises(IncompatibleModels, match="a DoRA tensor, but use_dora is false"):
        check_lora_against_base(config, tensors, base)


@pytest.mark.parametrize(
    "module",
    [Q0, "model.layers.1.self_attn.q_proj", "model.layers.0.mlp.down_proj",
     "model.layers.1.mlp.down_proj", "model.layers.11.mlp.down_proj", "down_proj", "xdown_proj"],
)
def test_pattern_value_agrees_with_peft(module: str) -> None:
    patterns = {"layers.1.self_attn.q_proj": 6, "down_proj": 2, r"model\.layers\.\d+\.mlp": 9}
    key = get_pattern_key(list(patterns), module)
    assert pattern_value(patterns, module) == patterns.get(key)


# --- client patterns run in linear time ---------------------------------------------------------

REGEX_KEYS = {r"layers\.\d+\.self_attn\.q_proj": 6, "q_proj|v_proj": 3, "(?i:DOWN_PROJ)": 5,
              r"mlp\..*": 7, "layers.1.self_attn.k_proj": 9, r"model\.layers\.[02468]\.": 2}


@pytest.mark.parametrize(
    "module",
    [Q0, "model.layers.1.self_attn.v_proj", "model.layers.0.mlp.down_proj",
     "model.layers.10.mlp.up_proj", "model.layers.1.self_attn.k_proj",
     "model.layersX1.self_attn.k_proj", "k_proj", "lm_head", "model.layers.2.mlp"],
)
def test_regex_pattern_keys_agree_with_peft(module: str) -> None:
    key = get_pattern_key(list(REGEX_KEYS), module)
    assert pattern_value(REGEX_KEYS, module) == REGEX_KEYS.get(key)


def test_catastrophic_backtracking_key_returns_at_once(real_config: dict[str, Any]) -> None:
    # On Python's re, `(a+)+$` against "a" * n + "!" takes time exponential in n: at n = 30
    # it would not return within the test run. RE2 answers in time linear in the name.
    module = "model." + "a" * 5000 + "!"
    config = parse_adapter_config({**real_config, "rank_pattern": {"(a+)+$": 8, "a+!": 2}})
    start = time.perf_counter()
    assert pattern_value({"(a+)+$": 8}, module) is None
    assert config.rank_of(module) == 2  # the first key misses, the second matches
    assert config.rank_of("model." + "a" * 5000) == 8
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (r"(q)\1_proj", "invalid escape sequence"),  # backreference
        ("(?=q)q_proj", "invalid perl operator"),  # lookahead
        ("(?<!v)q_proj", "invalid perl operator"),  # lookbehind
        ("q_proj*+", "bad repetition operator"),  # possessive
        ("((a{1000}){1000}){1000}", "invalid repetition size"),
    ],
)
def test_keys_re2_cannot_run_are_refused(real_config: dict[str, Any], key: str,
                                         reason: str) -> None:
    for field in ("rank_pattern", "alpha_pattern"):
        with pytest.raises(InvalidDelta) as info:
            parse_adapter_config({**real_config, field: {key: 2}})
        detail = info.value.detail
        assert f"pattern key {key!r} is not a valid regular expression for RE2" in detail
        assert f"({reason})" in detail
        assert "write it without backreferences, lookaround" in detail


def test_pattern_key_length_is_bounded(real_config: dict[str, Any]) -> None:
    longest = "x" * MAX_PATTERN_KEY_CHARS
    parse_adapter_config({**real_config, "rank_pattern": {longest: 2}})
    with pytest.raises(InvalidDelta, match=re.escape(
            f"rank_pattern key {longest[:40]!r}... is {MAX_PATTERN_KEY_CHARS + 1} characters, "
            f"over the limit of {MAX_PATTERN_KEY_CHARS}; a key only has to match the end")):
        parse_adapter_config({**real_config, "rank_pattern": {longest + "x": 2}})


def test_pattern_key_count_is_bounded(real_config: dict[str, Any]) -> None:
    most = {f"model.layers.{i}.mlp.down_proj": 2 for i in range(MAX_PATTERN_KEYS)}
    parse_adapter_config({**real_config, "alpha_pattern": most})
    with pytest.raises(InvalidDelta, match=f"alpha_pattern has {MAX_PATTERN_KEYS + 1} keys, "
                       f"over the limit of {MAX_PATTERN_KEYS}; give modules that share a value "
                       "one regex key"):
        parse_adapter_config({**real_config, "alpha_pattern": {**most, "lm_head": 1.0}})
