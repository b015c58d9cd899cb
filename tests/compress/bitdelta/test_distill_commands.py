"""`deltahub bitdelta --distill`: compress, then distil α, into one output made atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli.app import app
from tests.compress.helpers import nothing_written
from tests.finetune import FinetunePair

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # the tables fold long cells otherwise


def _args(pair: FinetunePair, out: Path, *extra: str) -> list[str]:
    return ["bitdelta", str(pair.base), str(pair.finetune), "-o", str(out), *extra]


def test_bitdelta_then_distil_prints_both_and_writes_one_delta(
        finetune_pair: FinetunePair, tmp_path: Path) -> None:
    out = tmp_path / "delta"
    result = runner.invoke(app, _args(finetune_pair, out, "--distill",
                                      str(finetune_pair.python.train), "--steps", "3",
                                      "--lr", "1e-3", "--batch-size", "2", "--seq-len", "32",
                                      "--seed", "7", "--loss", "mse"), env=WIDE)
    assert result.exit_code == 0, result.output
    section = json.loads((out / "report.json").read_text())["distillation"]
    assert section["steps"] == 3
    assert section["config"]["seed"] == 7
    assert section["config"]["loss"] == "mse"
    assert section["calibration"][0]["seq_len"] == 32
    assert "compression ratio" in result.stdout  # the compression summary, then distillation's
    assert f"{section['initial_loss']:.4g} → {section['final_loss']:.4g}" in result.stdout
    assert "distilling" in result.stderr  # the second progress bar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["delta"]  # no scratch left behind


def test_a_failed_distillation_leaves_no_output(finetune_pair: FinetunePair,
                                                tmp_path: Path) -> None:
    out = tmp_path / "delta"
    diverging = runner.invoke(app, _args(finetune_pair, out, "--distill",
                                         str(finetune_pair.python.train), "--steps", "3",
                                         "--lr", "1e30"), env=WIDE)
    assert diverging.exit_code == 1
    assert "NonFiniteLoss" in diverging.stderr
    assert nothing_written(out)
    bad = tmp_path / "rows.csv"
    bad.write_text("1,2,3\n")
    refused = runner.invoke(app, _args(finetune_pair, out, "--distill", str(bad)), env=WIDE)
    assert refused.exit_code == 1
    assert "InvalidDataset" in refused.stderr
    assert nothing_written(out)
    assert [p.name for p in tmp_path.iterdir()] == ["rows.csv"]


def test_an_existing_output_is_refused_before_compressing(
        finetune_pair: FinetunePair, tmp_path: Path) -> None:
    out = tmp_path / "delta"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, _args(finetune_pair, out, "--distill",
                                      str(finetune_pair.python.train)), env=WIDE)
    assert result.exit_code == 1
    assert "OutputExists" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert "compressing" not in result.stderr
    missing = runner.invoke(app, _args(finetune_pair, tmp_path / "d2", "--distill",
                                       str(tmp_path / "absent.txt")), env=WIDE)
    assert missing.exit_code == 2  # a usage error: typer checks the path exists


def test_without_distill_an_existing_output_gets_its_error_and_no_empty_progress_bar(
        finetune_pair: FinetunePair, tmp_path: Path) -> None:
    """The bar is drawn from the codec's first report on: a refusal prints only itself."""
    out = tmp_path / "delta"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    refused = runner.invoke(app, _args(finetune_pair, out), env=WIDE)
    assert refused.exit_code == 1
    assert "OutputExists" in refused.stderr
    assert "compressing" not in refused.stderr
    done = runner.invoke(app, _args(finetune_pair, tmp_path / "fresh"), env=WIDE)
    assert done.exit_code == 0, done.output
    assert "compressing" in done.stderr
