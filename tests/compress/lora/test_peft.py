"""The real `peft` library loads extracted adapters onto the tiny transformers Llama."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from compress.lora import FactorDtype, extract_lora, lora_key, saved_module_key
from tests.compress.lora.helpers import TIGHT_ERROR, make_planted_finetune

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

TOKENS = torch.tensor([[1, 17, 42, 5, 88, 3, 64, 9], [2, 2, 50, 51, 52, 95, 0, 7]])


@pytest.fixture(scope="module")
def planted(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_planted_finetune(tiny_base, tmp_path_factory.mktemp("planted") / "planted")


def load_base(path: Path) -> Any:
    return transformers.LlamaForCausalLM.from_pretrained(path).eval()


def expected_weights(base: Path, finetune: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """W_base + B·A for adapted modules, the fine-tune's values for saved ones."""
    weights = load_file(base / "model.safetensors")
    tuned = load_file(finetune / "model.safetensors")
    stored = load_file(adapter / "adapter_model.safetensors")
    for name in list(weights):
        module = name.removesuffix(".weight")
        if lora_key(module, "lora_A") in stored:
            B, A = stored[lora_key(module, "lora_B")], stored[lora_key(module, "lora_A")]
            weights[name] = weights[name] + B.float() @ A.float()
        elif saved_module_key(name) in stored:
            assert torch.equal(stored[saved_module_key(name)], tuned[name])
            weights[name] = tuned[name]
    return weights


def check_against_peft(base: Path, finetune: Path, adapter: Path,
                       tolerance: dict[str, float] | None = None) -> None:
    """peft's merged weights are W_base + B·A; its logits those of a model holding them."""
    tol = tolerance or {"atol": 1e-6, "rtol": 1e-5}
    model = peft.PeftModel.from_pretrained(load_base(base), adapter).eval()
    with torch.no_grad():
        peft_logits = model(TOKENS).logits.float()
    merged = model.merge_and_unload().state_dict()
    expected = expected_weights(base, finetune, adapter)
    assert set(merged) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(merged[name].float(), value.float(), **tol, msg=name)
    reference = load_base(base)
    reference.load_state_dict(expected)
    with torch.no_grad():
        reference_logits = reference(TOKENS).logits.float()
    scale = 10 if tolerance else 1  # logits sum 48-wide products of rounded weights
    torch.testing.assert_close(peft_logits, reference_logits, atol=1e-5 * scale**3,
                               rtol=1e-4 * scale**2)


def test_fixed_rank_adapter_loads_and_merges(tiny_base: Path, tiny_finetune: Path,
                                             tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    extract_lora(tiny_base, tiny_finetune, adapter, rank=3)
    check_against_peft(tiny_base, tiny_finetune, adapter)


def test_rank_pattern_adapter_loads_with_scaling_one(tiny_base: Path, planted: Path,
                                                     tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    report = extract_lora(tiny_base, planted, adapter, target_error=TIGHT_ERROR)
    model = peft.PeftModel.from_pretrained(load_base(tiny_base), adapter)
    for result in report.modules:
        layer = model.get_submodule("base_model.model." + result.module)
        assert layer.r["default"] == result.rank
        assert layer.scaling["default"] == 1.0
    check_against_peft(tiny_base, planted, adapter)


def test_saved_modules_reproduce_the_finetune(tiny_base: Path, tiny_finetune: Path,
                                              tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    report = extract_lora(tiny_base, tiny_finetune, adapter, rank=2)
    assert {c.name for c in report.saved} >= {"lm_head.weight", "model.embed_tokens.weight",
                                              "model.norm.weight"}
    model = peft.PeftModel.from_pretrained(load_base(tiny_base), adapter)
    tuned = load_file(tiny_finetune / "model.safetensors")
    for change in report.saved:
        module = model.get_submodule("base_model.model." + change.name.rpartition(".")[0])
        assert isinstance(module, peft.utils.other.ModulesToSaveWrapper)
        torch.testing.assert_close(module.weight, tuned[change.name], atol=0, rtol=0)
    check_against_peft(tiny_base, tiny_finetune, adapter)


def test_targets_only_adapter_loads_and_merges(tiny_base: Path, tiny_finetune: Path,
                                               tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    extract_lora(tiny_base, tiny_finetune, adapter, rank=3, targets_only=True)
    model = peft.PeftModel.from_pretrained(load_base(tiny_base), adapter)
    assert not any(isinstance(m, peft.utils.other.ModulesToSaveWrapper)
                   for m in model.modules())
    check_against_peft(tiny_base, tiny_finetune, adapter)


def test_the_default_is_closer_to_the_finetune_than_targets_only(
        tiny_base: Path, tiny_finetune: Path, tmp_path: Path) -> None:
    """Carrying the changed norms, embeddings and lm_head moves peft's output toward the
    fine-tune's, at the same rank."""
    def logits_error(adapter: Path) -> float:
        model = peft.PeftModel.from_pretrained(load_base(tiny_base), adapter).eval()
        with torch.no_grad():
            return float((model(TOKENS).logits.float() - tuned_logits).norm())

    with torch.no_grad():
        tuned_logits = load_base(tiny_finetune)(TOKENS).logits.float()
    extract_lora(tiny_base, tiny_finetune, tmp_path / "default", rank=2)
    extract_lora(tiny_base, tiny_finetune, tmp_path / "only", rank=2, targets_only=True)
    carried, only = logits_error(tmp_path / "default"), logits_error(tmp_path / "only")
    assert carried < 0.9 * only, (carried, only)


@pytest.mark.parametrize("factor_dtype", ["float32", "finetune"])
def test_bf16_model_loads_either_factor_dtype(tiny_pair: Callable[[torch.dtype], Any],
                                              tmp_path: Path, factor_dtype: FactorDtype) -> None:
    pair = tiny_pair(torch.bfloat16)
    adapter = tmp_path / "adapter"
    extract_lora(pair.base, pair.finetune, adapter, rank=4, factor_dtype=factor_dtype)
    stored = load_file(adapter / "adapter_model.safetensors")
    dtypes = {t.dtype for k, t in stored.items() if ".lora_" in k}
    assert dtypes == {torch.float32 if factor_dtype == "float32" else torch.bfloat16}
    # Carried modules keep the fine-tune's own values, so its dtype.
    assert {t.dtype for k, t in stored.items() if ".lora_" not in k} == {torch.bfloat16}
    # peft adds B·A in the base's bf16, so agreement is to bf16 rounding of the weights.
    check_against_peft(pair.base, pair.finetune, adapter, tolerance={"atol": 2e-3, "rtol": 1e-2})
