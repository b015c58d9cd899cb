"""`deltahub merge BASE ADAPTER -o DIR` on a PEFT adapter, through the real typer app:
it merges what peft merges and refuses, naming why, what it cannot."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

from registry.cli.app import app
from tests.compress.helpers import nothing_written
from tests.peft_adapters import PROBE, make_peft_adapter
from tests.registry.conftest import TinyModels

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def test_merge_a_dora_adapter(tiny_models: TinyModels, tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    made = make_peft_adapter(tiny_models.base, "dora", tmp_path / "dora")
    out = tmp_path / "merged"
    result = runner.invoke(app, ["merge", str(tiny_models.base), str(made.path), "-o",
                                 str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Merged model:" in result.output
    assert "LORA" in result.output
    assert "model.safetensors" in result.output
    with torch.no_grad():
        logits = LlamaForCausalLM.from_pretrained(out).eval()(input_ids=PROBE).logits
    torch.testing.assert_close(logits, made.logits, rtol=0, atol=1e-5)


def test_prompt_tuning_is_refused_with_how_to_serve_it(tiny_models: TinyModels,
                                                       tmp_path: Path) -> None:
    made = make_peft_adapter(tiny_models.base, "prompt", tmp_path / "prompt")
    out = tmp_path / "merged"
    result = runner.invoke(app, ["merge", str(tiny_models.base), str(made.path), "-o",
                                 str(out)], env=WIDE)
    assert result.exit_code == 1
    assert "PROMPT_TUNING adapter cannot be merged" in result.output
    assert "PeftModel.from_pretrained" in result.output
    assert nothing_written(out)


def test_an_adapter_of_another_base_is_refused(tiny_models: TinyModels,
                                               tmp_path: Path) -> None:
    out = tmp_path / "merged"
    # tiny_models.lora targets the MLP too, which the other base sizes differently.
    result = runner.invoke(app, ["merge", str(tiny_models.other_base), str(tiny_models.lora),
                                 "-o", str(out)], env=WIDE)
    assert result.exit_code == 1
    assert "IncompatibleModels" in result.output
    assert nothing_written(out)
