"""`deltahub evaluate` through typer, on the real fine-tune and its BitDelta delta.

The command is registered on an app of its own here: the `deltahub` app lists it once
registry/cli/app.py names it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from tests.compress.quality.conftest import Variants
from tests.compress.quality.helpers import cli
from tests.finetune import FinetunePair

runner = CliRunner()


def args(pair: FinetunePair, compressed: Path, *extra: str) -> list[str]:
    return ["evaluate", str(pair.base), str(pair.finetune), str(compressed),
            "--data", str(pair.python_text), "--data", str(pair.prose.heldout),
            "--seq-len", "64", "--batch-size", "8", "--max-batches", "2", *extra]


def test_evaluate_prints_the_table_and_writes_json(finetune_pair: FinetunePair,
                                                   variants: Variants, tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    result = runner.invoke(cli(), args(finetune_pair, variants.bitdelta, "--json", str(out)))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    python, prose = report["datasets"]
    assert (python["name"], python["rows"], prose["rows"]) == ("python_heldout.txt", 16, 16)
    rows = table_rows(result.stdout)
    improved = "improved"
    assert ["python_heldout.txt", "base", f"{python['base']['loss']:.4g}",
            f"{python['base']['perplexity']:.4g}", improved, "0"] in rows
    assert ["python_heldout.txt", "bitdelta", f"{python['compressed']['loss']:.4g}",
            f"{python['compressed']['perplexity']:.4g}", improved,
            f"{python['gain_kept']:.4g}"] in rows
    # Off its domain the fine-tune regressed: the table says so beside the figure.
    assert prose["finetune_change"] == "regressed"
    assert [r[4] for r in rows if len(r) > 4 and r[1]] == ["improved"] * 3 + ["regressed"] * 3
    assert "higher keeps more of the regression" in " ".join(result.stdout.split())
    assert "one model of" in result.stdout


def table_rows(output: str) -> list[list[str]]:
    """The cells of each row of a rich table."""
    return [[cell.strip() for cell in line.strip("│ ").split("│")]
            for line in output.splitlines() if line.startswith("│")]


def test_json_dash_prints_only_json(finetune_pair: FinetunePair, variants: Variants) -> None:
    result = runner.invoke(cli(), args(finetune_pair, variants.lora[4], "--json", "-"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["compressed_kind"] == "lora"
    assert report["gain_kept"] == report["datasets"][0]["gain_kept"]


def test_text_without_a_tokenizer_exits_1_with_the_fix(finetune_pair: FinetunePair,
                                                        variants: Variants,
                                                        tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    for file in ("config.json", "model.safetensors"):
        shutil.copy(finetune_pair.base / file, base / file)
    finetune = tmp_path / "finetune"
    shutil.copytree(base, finetune)
    result = runner.invoke(cli(), ["evaluate", str(base), str(finetune), str(variants.bitdelta),
                                   "--data", str(finetune_pair.python_text)])
    assert result.exit_code == 1
    assert "MissingTokenizer" in result.stderr
    message = " ".join(result.stderr.split())
    assert "pre-tokenized ids (.safetensors with an integer tensor input_ids [n, seq])" in message
    given = runner.invoke(cli(), ["evaluate", str(base), str(finetune), str(variants.bitdelta),
                                  "--data", str(finetune_pair.python_text), "--tokenizer",
                                  str(finetune_pair.base / "tokenizer.json"), "--max-batches",
                                  "1", "--seq-len", "64", "--json", "-"])
    assert given.exit_code == 0, given.output


def test_bad_options_are_usage_errors(finetune_pair: FinetunePair, variants: Variants) -> None:
    assert runner.invoke(cli(), args(finetune_pair, variants.bitdelta, "--batch-size", "0")
                         ).exit_code == 2
    assert runner.invoke(cli(), args(finetune_pair, variants.bitdelta, "--dtype", "int8")
                         ).exit_code == 2
    no_data = ["evaluate", str(finetune_pair.base), str(finetune_pair.finetune),
               str(variants.bitdelta)]
    assert runner.invoke(cli(), no_data).exit_code == 2
