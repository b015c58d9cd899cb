"""`merge_peft`: every type peft merges, merged on disk, gives peft's own merged model;
what cannot be merged, or does not fit the base, is refused before any weight is loaded
and leaves nothing behind."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from compress.errors import (
    IncompatibleModels,
    InvalidDelta,
    InvalidModel,
    NonFiniteTensor,
    OutputExists,
    PickleRefused,
)
from compress.peft import merge as peft_merge
from compress.peft.merge import merge_peft
from tests.compress.helpers import nothing_written
from tests.models import TINY_LLAMA, make_bnb4bit, make_tiny_llama
from tests.peft_adapters import PROBE, MadeAdapter, make_peft_adapter

MERGEABLE = ("lora", "dora", "rslora", "adalora", "vera", "vera-prng", "ia3", "loha", "lokr",
             "oft")
PROMPT_LEARNING = ("prompt", "p-tuning", "prefix")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_tiny_llama(tmp_path_factory.mktemp("peft-merge") / "base")
    (path / "tokenizer_config.json").write_text('{"model_max_length": 64}\n')
    return path


@pytest.fixture(scope="module")
def adapters(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, MadeAdapter]:
    root = tmp_path_factory.mktemp("peft-merge-adapters")
    return {label: make_peft_adapter(base, label, root / label)
            for label in (*MERGEABLE, *PROMPT_LEARNING)}


def _logits(model_dir: Path) -> torch.Tensor:
    from transformers import LlamaForCausalLM

    with torch.no_grad():
        return LlamaForCausalLM.from_pretrained(model_dir).eval()(input_ids=PROBE).logits


def _peft_merged_state(base: Path, adapter: Path, dtype: torch.dtype = torch.float32
                       ) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base, dtype=dtype),
                                          adapter)
        return model.merge_and_unload().state_dict()


def _no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("the base was loaded before the adapter was checked")

    monkeypatch.setattr(peft_merge, "_merged_state", loaded)


@pytest.mark.parametrize("label", MERGEABLE)
def test_each_mergeable_type_gives_peft_s_merged_model(
        label: str, base: Path, adapters: dict[str, MadeAdapter], tmp_path: Path) -> None:
    made, out = adapters[label], tmp_path / "merged"
    report = merge_peft(base, made.path, out)
    assert report.peft_type == made.peft_type
    assert report.validated
    assert report.modules > 0
    assert report.files == ["model.safetensors"]
    written = load_file(out / "model.safetensors")
    expected = _peft_merged_state(base, made.path)
    assert list(written) == list(load_file(base / "model.safetensors"))  # the base's layout
    for name, tensor in written.items():
        assert torch.equal(tensor, expected[name]), name
    torch.testing.assert_close(_logits(out), made.logits, rtol=0, atol=1e-5)
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (base / name).read_bytes()


def test_a_small_shard_size_writes_shards_transformers_loads(
        base: Path, adapters: dict[str, MadeAdapter], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    report = merge_peft(base, adapters["loha"].path, out, max_shard_bytes=50_000)
    assert len(report.files) > 2
    assert "model.safetensors.index.json" in report.files
    torch.testing.assert_close(_logits(out), adapters["loha"].logits, rtol=0, atol=1e-5)


def test_a_bfloat16_base_with_tied_embeddings_keeps_its_dtype_and_layout(
        tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    base = tmp_path / "tied"
    config = LlamaConfig(**{**TINY_LLAMA, "tie_word_embeddings": True})
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(base)
    made = make_peft_adapter(base, "lora", tmp_path / "lora")
    out = tmp_path / "merged"
    assert merge_peft(base, made.path, out).dtype == "BF16"
    written = load_file(out / "model.safetensors")
    assert list(written) == list(load_file(base / "model.safetensors"))  # no lm_head copy
    expected = _peft_merged_state(base, made.path, torch.bfloat16)
    for name, tensor in written.items():
        assert torch.equal(tensor, expected[name]), name


@pytest.mark.parametrize("label", PROMPT_LEARNING)
def test_prompt_learning_is_refused_and_told_how_to_serve(
        label: str, base: Path, adapters: dict[str, MadeAdapter], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _no_loading(monkeypatch)
    out = tmp_path / "merged"
    with pytest.raises(InvalidDelta) as caught:
        merge_peft(base, adapters[label].path, out)
    assert f"a {adapters[label].peft_type} adapter cannot be merged" in caught.value.detail
    assert "PeftModel.from_pretrained" in caught.value.detail
    assert nothing_written(out)


def test_a_mismatched_base_is_refused_before_loading(
        adapters: dict[str, MadeAdapter], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other"
    LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, "hidden_size": 64})).save_pretrained(other)
    _no_loading(monkeypatch)
    out = tmp_path / "merged"
    with pytest.raises(IncompatibleModels, match="q_proj"):
        merge_peft(other, adapters["dora"].path, out)
    assert nothing_written(out)


def test_a_pickled_adapter_is_refused(base: Path, adapters: dict[str, MadeAdapter],
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(adapters["lora"].path, pickled)
    weights = pickled / "adapter_model.safetensors"
    torch.save(load_file(weights), pickled / "adapter_model.bin")
    weights.unlink()
    _no_loading(monkeypatch)
    out = tmp_path / "merged"
    with pytest.raises(PickleRefused, match=r"adapter_model\.bin"):
        merge_peft(base, pickled, out)
    assert nothing_written(out)


def test_a_quantized_base_is_refused(base: Path, adapters: dict[str, MadeAdapter],
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("bitsandbytes.functional")
    quantized = make_bnb4bit(base, tmp_path / "quantized")
    _no_loading(monkeypatch)
    with pytest.raises(InvalidModel, match="full-precision parent"):
        merge_peft(quantized, adapters["lora"].path, tmp_path / "merged")


def test_a_failure_while_writing_leaves_nothing(
        base: Path, adapters: dict[str, MadeAdapter], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fail_on_third(name: str, tensor: torch.Tensor, where: str = "") -> None:
        calls.append(name)
        if len(calls) == 3:
            raise NonFiniteTensor(name, where)

    monkeypatch.setattr(peft_merge, "ensure_finite", fail_on_third)
    out = tmp_path / "merged"
    with pytest.raises(NonFiniteTensor):
        merge_peft(base, adapters["ia3"].path, out)
    assert nothing_written(out)


def test_an_existing_output_is_refused(base: Path, adapters: dict[str, MadeAdapter],
                                       tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExists):
        merge_peft(base, adapters["lora"].path, out)
    assert (out / "keep.txt").read_text() == "mine"
