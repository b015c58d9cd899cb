"""`deltahub bitdelta` and `deltahub merge` through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from registry.cli.app import app
from tests.compress.bitdelta.helpers import tensors_of, variant
from tests.compress.helpers import nothing_written

runner = CliRunner()


def test_bitdelta_then_merge(tiny_base: Path, tiny_finetune: Path, tmp_path: Path) -> None:
    delta, merged = tmp_path / "delta", tmp_path / "merged"
    result = runner.invoke(app, ["bitdelta", str(tiny_base), str(tiny_finetune), "-o", str(delta),
                                 "--scale", "tensor", "--target", "q_proj", "--target", "v_proj",
                                 "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "compression ratio" in result.stdout
    assert "q_proj" in result.stdout
    report = json.loads((delta / "report.json").read_text())
    assert report["scale_mode"] == "tensor"
    assert report["compressed_count"] == 4
    assert f"{report['ratio']:.4g}" in result.stdout

    result = runner.invoke(app, ["merge", str(tiny_base), str(delta), "--output", str(merged)])
    assert result.exit_code == 0, result.output
    assert "weights rebuilt from bits" in result.stdout
    assert tensors_of(merged).keys() == tensors_of(tiny_finetune).keys()


def test_errors_exit_1_with_the_message_and_write_nothing(
        tiny_base: Path, tiny_finetune: Path, tmp_path: Path) -> None:
    finetune = variant(tiny_finetune, tmp_path / "ft", {"lm_head.weight": torch.zeros(3, 48)})
    out = tmp_path / "delta"
    result = runner.invoke(app, ["bitdelta", str(tiny_base), str(finetune), "-o", str(out)])
    assert result.exit_code == 1
    assert "IncompatibleModels" in result.stderr
    assert "'lm_head.weight'" in result.stderr
    assert nothing_written(out)

    result = runner.invoke(app, ["merge", str(tiny_base), str(tiny_finetune), "-o", str(out)])
    assert result.exit_code == 1
    assert "not a BitDelta delta" in result.stderr
    assert nothing_written(out)


def test_bad_options_are_usage_errors(tiny_base: Path, tiny_finetune: Path,
                                      tmp_path: Path) -> None:
    out = str(tmp_path / "delta")
    args = ["bitdelta", str(tiny_base), str(tiny_finetune), "-o", out]
    assert runner.invoke(app, [*args, "--scale", "column"]).exit_code == 2
    both = runner.invoke(app, [*args, "--target", "q_proj", "--target-regex", ".*"])
    assert both.exit_code == 2
    assert "not both" in both.output
    assert nothing_written(tmp_path / "delta")
