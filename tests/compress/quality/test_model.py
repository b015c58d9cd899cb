"""Models built from a config.json and deltahub's readers run as transformers' own do."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from compress.errors import InvalidModel
from compress.quality import MissingDependency, build_model, causal_lm_config, open_variant
from compress.tensorio import Checkpoint
from tests.compress.quality.helpers import cli
from tests.finetune import FinetunePair
from tests.models import TINY_LLAMA

TOKENS = torch.tensor([[1, 17, 42, 5, 88, 3, 64, 9], [2, 2, 50, 51, 52, 95, 0, 7]])
CPU = torch.device("cpu")


def tensors_of(checkpoint: Checkpoint) -> Iterator[tuple[str, torch.Tensor]]:
    return ((name, checkpoint.tensor(name)) for name in checkpoint.manifest.names)


def build(path: Path, tensors: Iterator[tuple[str, torch.Tensor]] | None = None,
          dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    with Checkpoint.open(path) as checkpoint:
        return build_model(causal_lm_config(checkpoint.config, str(path)),
                           tensors if tensors is not None else tensors_of(checkpoint),
                           dtype=dtype, device=CPU, source=str(path))


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=TOKENS).logits  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def tied_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose lm_head is its embedding: save_pretrained stores it once."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tied") / "model"
    LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, "tie_word_embeddings": True})
                     ).save_pretrained(out)
    return out


def test_a_tied_model_runs_as_from_pretrained_runs_it(tied_llama: Path) -> None:
    from transformers import LlamaForCausalLM

    with Checkpoint.open(tied_llama) as checkpoint:
        assert "lm_head.weight" not in checkpoint.manifest
    ours = build(tied_llama)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert not ours.training
    assert not any(p.requires_grad for p in ours.parameters())
    reference = LlamaForCausalLM.from_pretrained(tied_llama).eval()
    torch.testing.assert_close(logits(ours), logits(reference), rtol=0, atol=0)
    half = build(tied_llama, dtype=torch.bfloat16)
    assert half.model.embed_tokens.weight.dtype == torch.bfloat16


def test_tensors_that_do_not_fit_are_named(tied_llama: Path) -> None:
    with Checkpoint.open(tied_llama) as checkpoint:
        state = dict(tensors_of(checkpoint))
    wrong = {**state, "model.norm.weight": torch.ones(7), "model.extra.weight": torch.ones(2)}
    del wrong["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(InvalidModel) as refused:
        build(tied_llama, iter(wrong.items()))
    detail = refused.value.detail
    assert "'model.norm.weight' is [7], the architecture has [48]" in detail
    assert "'model.extra.weight' is not one of its tensors" in detail
    assert "'model.layers.1.mlp.up_proj.weight' is missing" in detail


@pytest.mark.parametrize(("config", "message"), [
    (None, "has no config.json"),
    ({"model_type": "llama", "auto_map": {"AutoModelForCausalLM": "x.Y"}}, "custom model code"),
    ({"hidden_size": 8}, "has no model_type"),
    ({"model_type": "no-such-architecture"}, "'no-such-architecture' is not an architecture"),
])
def test_configs_that_cannot_be_built_are_refused(config: dict[str, object] | None,
                                                  message: str) -> None:
    with pytest.raises(InvalidModel, match=message):
        causal_lm_config(config, "model")


def test_an_adapter_peft_made_with_embedding_factors_applies_as_peft_applies_it(
        finetune_pair: FinetunePair, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    from transformers import LlamaForCausalLM

    torch.manual_seed(3)
    config = peft.LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                             target_modules=["embed_tokens", "q_proj", "down_proj"])
    model = peft.get_peft_model(LlamaForCausalLM.from_pretrained(finetune_pair.base), config)
    # With the embedding weights it adapts, which replace the base's before the factors apply.
    model.save_pretrained(tmp_path / "adapter", save_embedding_layers=True)
    with Checkpoint.open(finetune_pair.base) as base:
        variant = open_variant(tmp_path / "adapter", base.manifest)
        assert variant.summary.ranks.keys() >= {"model.embed_tokens"}  # type: ignore[union-attr]
        ours = build(finetune_pair.base, iter(list(variant.tensors(base))))
    torch.testing.assert_close(logits(ours), logits(model.eval()), atol=1e-4, rtol=1e-4)


def test_without_transformers_the_extra_is_named(finetune_pair: FinetunePair,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if absent
    config = json.loads((finetune_pair.base / "config.json").read_text())
    with pytest.raises(MissingDependency, match=r"pip install 'deltahub\[compress\]'"):
        causal_lm_config(config, "base")
    result = CliRunner().invoke(cli(), [
        "evaluate", str(finetune_pair.base), str(finetune_pair.finetune),
        str(finetune_pair.finetune), "--data", str(finetune_pair.python.heldout)])
    assert result.exit_code == 7
    assert "deltahub[compress]" in result.stderr
