"""Options that change what peft writes (LoKr decomposed, IA³ regexes, OFT block sharing,
LoHa rank patterns, prefix projection, LoRA on embeddings, ...): each real adapter passes
compress/peft's checks, and its shapes are what peft wrote."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from compress.errors import IncompatibleModels
from compress.peft import check_peft_against_base
from compress.tensorio import Manifest, manifest_from_headers, read_header
from tests.models import make_tiny_llama


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("peft-variants") / "base")


def _manifest(base_dir: Path) -> Manifest:
    return manifest_from_headers({"model.safetensors": read_header(base_dir / "model.safetensors")})


def _configs() -> dict[str, Any]:
    import peft

    lm = {"task_type": "CAUSAL_LM"}
    mixed = ["q_proj", "down_proj"]
    return {
        "lokr-decomposed": peft.LoKrConfig(r=2, target_modules=["q_proj", "down_proj"], **lm),
        "lokr-both": peft.LoKrConfig(r=2, decompose_both=True, target_modules=mixed, **lm),
        "lokr-factor": peft.LoKrConfig(r=8, decompose_factor=4, target_modules=mixed, **lm),
        "ia3-regex": peft.IA3Config(target_modules=r".*\.(k_proj|down_proj)",
                                    feedforward_modules=r".*\.down_proj", **lm),
        "loha-rank-pattern": peft.LoHaConfig(r=4, rank_pattern={"v_proj": 2},
                                             target_modules=["q_proj", "v_proj"], **lm),
        "oft-block-share": peft.OFTConfig(r=0, oft_block_size=6, block_share=True,
                                          target_modules=mixed, **lm),
        "oft-r": peft.OFTConfig(r=4, oft_block_size=0, target_modules=mixed, **lm),
        "prefix-projection": peft.PrefixTuningConfig(num_virtual_tokens=3,
                                                     prefix_projection=True,
                                                     encoder_hidden_size=16, **lm),
        "vera-mlp": peft.VeraConfig(r=4, target_modules=["q_proj", "up_proj", "down_proj"],
                                    **lm),
        "lora-embedding": peft.LoraConfig(r=2, target_modules=["embed_tokens", "q_proj"], **lm),
        "dora-mlp": peft.LoraConfig(r=2, target_modules=["down_proj"], use_dora=True, **lm),
        "adalora-untrained": peft.AdaLoraConfig(init_r=4, total_step=10,
                                                target_modules=["down_proj", "up_proj"], **lm),
    }


def _save(base_dir: Path, name: str, out: Path) -> tuple[dict[str, Any], Path]:
    import peft
    from transformers import LlamaForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(LlamaForCausalLM.from_pretrained(base_dir),
                                    _configs()[name])
        model.save_pretrained(out)
    return json.loads((out / "adapter_config.json").read_text()), out / "adapter_model.safetensors"


@pytest.mark.parametrize("name", ["lokr-decomposed", "lokr-both", "lokr-factor", "ia3-regex",
                                  "loha-rank-pattern", "oft-block-share", "oft-r",
                                  "prefix-projection", "vera-mlp", "lora-embedding",
                                  "dora-mlp", "adalora-untrained"])
def test_each_variant_passes(base_dir: Path, tmp_path: Path, name: str) -> None:
    config, weights = _save(base_dir, name, tmp_path / name)
    record = check_peft_against_base(config, read_header(weights).tensors, _manifest(base_dir))
    assert record.peft["validated"] is True
    assert record.params["parameter_count"] > 0


def test_loha_rank_pattern_gives_each_module_its_rank(base_dir: Path, tmp_path: Path) -> None:
    config, weights = _save(base_dir, "loha-rank-pattern", tmp_path / "loha")
    record = check_peft_against_base(config, read_header(weights).tensors, _manifest(base_dir))
    assert record.peft["ranks"] == [2, 4]
    config["rank_pattern"] = {}
    with pytest.raises(IncompatibleModels, match=r"v_proj\.hada_w1_a is \[24, 2\], expected "
                                                 r"\[24, 4\] \(out=24, r=4\)"):
        check_peft_against_base(config, read_header(weights).tensors, _manifest(base_dir))


def test_lokr_factors_must_multiply_to_the_base_weight(base_dir: Path, tmp_path: Path) -> None:
    config, weights = _save(base_dir, "lokr-factor", tmp_path / "lokr")
    other = make_tiny_llama(tmp_path / "other")  # same sizes: passes
    check_peft_against_base(config, read_header(weights).tensors, _manifest(other))
    tensors = dict(read_header(weights).tensors)
    key = next(k for k in tensors if k.endswith("down_proj.lokr_w1"))
    entry = tensors[key]
    tensors[key] = type(entry)(entry.name, entry.dtype, (entry.shape[0] + 1, entry.shape[1]),
                               entry.start, entry.end)
    with pytest.raises(IncompatibleModels, match=r"down_proj': lokr_w1 ⊗ lokr_w2 is "
                                                 r"\[.*\] = \[\d+, 120\], expected the base "
                                                 r"weight's \[out, in\] = \[48, 120\]"):
        check_peft_against_base(config, tensors, _manifest(base_dir))
