"""`deltahub extract-lora` through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from registry.cli.app import app
from tests.compress.helpers import nothing_written
from tests.compress.lora.helpers import read_config, write_model

runner = CliRunner()


def test_fixed_rank_prints_a_summary(tiny_base: Path, tiny_finetune: Path,
                                     tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["extract-lora", str(tiny_base), str(tiny_finetune),
                                 "-o", str(out), "--rank", "3", "--target", "q_proj",
                                 "--target", "v_proj", "--base-name", "tiny-llama"])
    assert result.exit_code == 0, result.output
    adapted, left_out = result.stdout.split("Changed but left out")
    assert "q_proj" in adapted
    assert "v_proj" in adapted
    assert "o_proj" not in adapted
    # k_proj and o_proj, 2 layers each, not carried whole by default (folded across lines)
    assert "attn.k_proj.weight" in left_out
    assert "attn.o_proj.weight" in left_out
    assert "not a LoRA target" in left_out
    assert "Changed and carried through modules_to_save" in adapted
    assert "model.layers.*.input_layernorm.weight" in adapted
    assert "lm_head.weight" in adapted
    assert "--targets-only leaves them out" in adapted
    config = read_config(out)
    assert config["target_modules"] == ["q_proj", "v_proj"]
    assert config["r"] == 3
    assert config["base_model_name_or_path"] == "tiny-llama"
    report = json.loads((out / "report.json").read_text())
    assert [m["rank"] for m in report["modules"]] == [3] * 4
    worst_q = max(m["error"] for m in report["modules"] if m["module"].endswith("q_proj"))
    assert f"{worst_q:.4g}" in adapted


def test_target_error_with_save_modules(tiny_base: Path, tiny_finetune: Path,
                                        tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["extract-lora", str(tiny_base), str(tiny_finetune),
                                 "--output", str(out), "--target-error", "0.3",
                                 "--save-modules", "--dtype", "finetune"])
    assert result.exit_code == 0, result.output
    assert "saved through modules_to_save: 7 tensor(s)" in result.stdout
    assert result.stdout.count("2/2") == 7
    assert "lm_head" in read_config(out)["modules_to_save"]  # type: ignore[operator]


def test_targets_only_leaves_the_non_targets_out(tiny_base: Path, tiny_finetune: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["extract-lora", str(tiny_base), str(tiny_finetune),
                                 "-o", str(out), "--rank", "2", "--targets-only"])
    assert result.exit_code == 0, result.output
    assert "modules_to_save" not in result.stdout.split("Changed but left out")[0]
    _, left_out = result.stdout.split("Changed but left out")
    assert "lm_head.weight" in left_out
    assert "embed_tokens" in left_out  # the table may fold the whole name
    assert "drop --targets-only to carry" in left_out
    assert read_config(out)["modules_to_save"] is None
    report = json.loads((out / "report.json").read_text())
    assert report["saved"] == []
    assert all(e["bytes"] > 0 and e["relative_change"] > 0 for e in report["left_out"])


def test_save_modules_contradicts_targets_only(tiny_base: Path, tiny_finetune: Path,
                                               tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["extract-lora", str(tiny_base), str(tiny_finetune),
                                 "-o", str(out), "--rank", "2", "--targets-only",
                                 "--save-modules"])
    assert result.exit_code == 2
    assert "contradicts" in result.output
    assert not out.exists()


def test_missed_targets_are_flagged(tiny_base: Path, tiny_finetune: Path,
                                    tmp_path: Path) -> None:
    result = runner.invoke(app, ["extract-lora", str(tiny_base), str(tiny_finetune),
                                 "-o", str(tmp_path / "a"), "--target-error", "0.01",
                                 "--max-rank", "2"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("0/2") == 7  # per kind: none of 2 layers met the target
    assert "14 module(s) miss the target error 0.01 at the rank cap 2" in result.stderr
    assert "--max-rank" in result.stderr


def test_bad_rank_options_exit_1_and_write_nothing(tiny_base: Path, tiny_finetune: Path,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    args = ["extract-lora", str(tiny_base), str(tiny_finetune), "-o", str(out)]
    cases = [([], "exactly one"), (["--rank", "2", "--target-error", "0.1"], "exactly one"),
             (["--target-error", "1.5"], "strictly between 0 and 1"),
             (["--rank", "100"], "exceeds min(out, in)")]
    for extra, message in cases:
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 1, extra
        assert "InvalidParameter" in result.stderr
        assert message in result.stderr, result.stderr
        assert nothing_written(out)
    both = runner.invoke(app, [*args, "--rank", "2", "--target", "q_proj", "--target-regex", "x"])
    assert both.exit_code == 2
    assert "not both" in both.output


def test_incompatible_models_exit_1(tiny_base: Path, tiny_finetune: Path,
                                    tmp_path: Path) -> None:
    tensors = load_file(tiny_finetune / "model.safetensors")
    tensors["lm_head.weight"] = torch.zeros(95, 48)
    other = write_model(tmp_path / "other", tensors)
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["extract-lora", str(tiny_base), str(other), "-o", str(out),
                                 "--rank", "2"])
    assert result.exit_code == 1
    assert "IncompatibleModels" in result.stderr
    assert "'lm_head.weight'" in result.stderr
    assert nothing_written(out)
