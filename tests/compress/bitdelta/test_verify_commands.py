"""`deltahub verify` through the real typer app: tables, the JSON report, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from kernels import bitdelta_linear
from registry.cli.app import app
from tests.compress.bitdelta.helpers import make_delta

runner = CliRunner()


@pytest.fixture(scope="module")
def delta(tiny_base: Path, tiny_finetune: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Path:
    return make_delta(tiny_base, tiny_finetune, tmp_path_factory.mktemp("cli") / "delta")


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner is no terminal, so rich would assume 80 columns and fold module names.
    # (Setting console.stdout.width would freeze the width for every later test: rich keeps
    # an assigned width, and monkeypatch's undo assigns the old one.)
    monkeypatch.setenv("COLUMNS", "200")


def verify(tiny_base: Path, tiny_finetune: Path, delta: Path, *options: str
           ) -> tuple[int, str, str]:
    result = runner.invoke(app, ["verify", str(tiny_base), str(tiny_finetune), str(delta),
                                 "--device", "cpu", *options])
    return result.exit_code, result.stdout, result.stderr


def test_tables_and_json_report(tiny_base: Path, tiny_finetune: Path, delta: Path,
                                tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code, stdout, stderr = verify(tiny_base, tiny_finetune, delta, "--json", str(out))
    assert code == 0, stderr
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert summary["ok"] is True
    assert summary["layers"] == len(report["layers"]) == 14
    assert "14 of 14 layers" in stdout
    assert f"{summary['compression_rel_error_max']:.4g}" in stdout
    assert f"{summary['compression_rel_error_mean']:.4g}" in stdout
    assert "cpu / torch / float32" in stdout
    assert "10 worst layers" in stdout
    by_error = sorted(report["layers"], key=lambda r: -r["compression_rel_error"])
    shown = [r["module"] for r in by_error[:10]]
    hidden = [r["module"] for r in by_error[10:]]
    assert all(m in stdout for m in shown)
    assert not any(m in stdout for m in hidden)
    assert stdout.index(shown[0]) < stdout.index(shown[1])  # worst first


def test_all_lists_every_layer_and_writes_no_file_unasked(
        tiny_base: Path, tiny_finetune: Path, delta: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = sorted(p.name for p in delta.iterdir())
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    code, stdout, stderr = verify(tiny_base, tiny_finetune, delta, "--all", "--rows", "8")
    assert code == 0, stderr
    assert list(workdir.iterdir()) == []  # no JSON without --json PATH
    assert "not written (--json PATH writes one)" in stdout
    assert "All 14 layers" in stdout
    out = tmp_path / "all.json"
    code, _, stderr = verify(tiny_base, tiny_finetune, delta, "--rows", "8", "--json", str(out))
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["summary"]["rows"] == 8
    assert all(layer["module"] in stdout for layer in report["layers"])
    assert sorted(p.name for p in delta.iterdir()) == before  # the pushed artifact is untouched


def test_max_error_gates_with_status_3(tiny_base: Path, tiny_finetune: Path, delta: Path,
                                       tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code, _, stderr = verify(tiny_base, tiny_finetune, delta, "--json", str(out),
                             "--max-error", "0.001")
    assert code == 3
    report = json.loads(out.read_text())  # written all the same
    assert "exceeds --max-error 0.001" in stderr
    assert report["summary"]["compression_worst_layer"] in stderr
    code, _, stderr = verify(tiny_base, tiny_finetune, delta, "--json", str(out),
                             "--max-error", "0.5")
    assert code == 0, stderr


def test_a_wrong_kernel_exits_1_and_still_writes_the_report(
        tiny_base: Path, tiny_finetune: Path, delta: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def off_by_one_percent(*args: Any, **kwargs: Any) -> torch.Tensor:
        return bitdelta_linear(*args, **kwargs) * 1.01

    # A deliberately wrong kernel: the only way to see the failure path on a correct one.
    monkeypatch.setattr("kernels.verify.bitdelta_linear", off_by_one_percent)
    out = tmp_path / "report.json"
    code, stdout, stderr = verify(tiny_base, tiny_finetune, delta, "--json", str(out),
                                  "--max-error", "0.001")
    assert code == 1  # a kernel bug outranks the compression gate
    assert "kernel check failed on 14 layers" in stderr
    assert "0 of 14 layers" in stdout
    assert " NO " in stdout
    report = json.loads(out.read_text())
    assert report["summary"]["ok"] is False
    assert len(report["summary"]["kernel_failures"]) == 14


def test_refused_inputs_exit_1_with_the_message(tiny_base: Path, tiny_finetune: Path,
                                                tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code, _, stderr = verify(tiny_base, tiny_finetune, tiny_finetune, "--json", str(out))
    assert code == 1
    assert "InvalidDelta" in stderr
    assert "not a BitDelta delta" in stderr
    assert not out.exists()


def test_bad_options_are_usage_errors(tiny_base: Path, tiny_finetune: Path,
                                      delta: Path) -> None:
    assert verify(tiny_base, tiny_finetune, delta, "--rows", "0")[0] == 2
    assert verify(tiny_base, tiny_finetune, delta, "--backend", "cuda")[0] == 2
    assert verify(tiny_base, tiny_finetune, delta, "--max-error", "-1")[0] == 2
