"""`push-model` of a registered model again, and `attach-tokenizer`: no dead ends.

A CI retry of a push whose client died after finalizing finds the model (exit 0); a text
data set refused for want of a tokenizer names the way to give the model one, and that
way works without a new model name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from registry.cli.failures import EXIT_FAILED
from tests.finetune import byte_tokenizer_json
from tests.registry.cli.conftest import Cli
from tests.registry.conftest import TinyModels
from tests.registry.datasets.helpers import TEXT


def flat(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture
def with_tokenizer(tiny_models: TinyModels, tmp_path: Path) -> Path:
    directory = tmp_path / "ft-with-tokenizer"
    shutil.copytree(tiny_models.finetune, directory)
    (directory / "tokenizer.json").write_text(byte_tokenizer_json(), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text('{"model_max_length": 64}',
                                                     encoding="utf-8")
    return directory


@pytest.fixture
def registered(cli: Cli, tiny_models: TinyModels) -> None:
    for args in (["push-model", str(tiny_models.base), "--name", "tiny-base"],
                 ["push-model", str(tiny_models.finetune), "--name", "tiny-ft",
                  "--base", "tiny-base"]):
        result = cli(*args)
        assert result.exit_code == 0, result.output


def test_push_model_of_identical_content_again_is_unchanged(
        cli: Cli, tiny_models: TinyModels, registered: None) -> None:
    again = cli("push-model", str(tiny_models.finetune), "--name", "tiny-ft",
                "--base", "tiny-base")
    assert again.exit_code == 0, again.output
    assert "ready (unchanged: identical content already registered)" in flat(again.output)
    other_base = cli("push-model", str(tiny_models.finetune), "--name", "tiny-ft")
    assert other_base.exit_code == EXIT_FAILED, other_base.output
    assert "NameTaken" in other_base.output


def test_a_text_data_set_refused_for_want_of_a_tokenizer_works_once_one_is_attached(
        cli: Cli, registered: None, with_tokenizer: Path, tmp_path: Path) -> None:
    (tmp_path / "held.txt").write_bytes(TEXT * 20)
    pushed = cli("push-dataset", str(tmp_path / "held.txt"), "--name", "held")
    assert "deltahub attach-tokenizer MODEL DIR" in flat(pushed.output)
    refused = cli("compress", "tiny-ft", "--method", "bitdelta", "--evaluate", "held")
    assert refused.exit_code == EXIT_FAILED, refused.output
    assert "deltahub attach-tokenizer tiny-ft DIR" in flat(refused.output)

    attached = cli("attach-tokenizer", "tiny-ft", str(with_tokenizer))
    assert attached.exit_code == 0, attached.output
    assert ("tiny-ft: added tokenizer.json, tokenizer_config.json; weights unchanged"
            in flat(attached.output))
    queued = cli("compress", "tiny-ft", "--method", "bitdelta", "--evaluate", "held",
                 "--evaluate-seq-len", "32")
    assert queued.exit_code == 0, queued.output
    # The directory with weights and tokenizer is now the model's very content.
    again = cli("push-model", str(with_tokenizer), "--name", "tiny-ft", "--base", "tiny-base")
    assert again.exit_code == 0, again.output
    assert "(unchanged: identical content already registered)" in flat(again.output)
    # A tokenizer file, once attached, never changes.
    (with_tokenizer / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    changed = cli("attach-tokenizer", "tiny-ft", str(with_tokenizer))
    assert changed.exit_code == EXIT_FAILED, changed.output
    assert "NotPending" in changed.output


def test_push_model_of_the_same_weights_with_a_tokenizer_adds_it(
        cli: Cli, registered: None, with_tokenizer: Path) -> None:
    pushed = cli("push-model", str(with_tokenizer), "--name", "tiny-ft", "--base", "tiny-base")
    assert pushed.exit_code == 0, pushed.output
    assert ("ready (weights unchanged; added tokenizer.json, tokenizer_config.json)"
            in flat(pushed.output))
    shown = cli("show", "--model", "tiny-ft")
    assert "tokenizer.json" in shown.output
