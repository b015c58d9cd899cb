"""`deltahub push-model --kind base --quantized-from`: a 4-bit base from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models import make_bnb4bit
from tests.registry.cli.conftest import Cli
from tests.registry.conftest import TinyModels

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_push_model_registers_a_4bit_base_quantized_from_its_parent(
        cli: Cli, tiny_models: TinyModels, tmp_path: Path) -> None:
    assert cli("push-model", str(tiny_models.base), "--name", "tiny").exit_code == 0
    q4 = make_bnb4bit(tiny_models.base, tmp_path / "q4", "nf4", True)
    result = cli("push-model", str(q4), "--name", "tiny-4bit", "--kind", "base",
                 "--quantized-from", "tiny")
    assert result.exit_code == 0, result.output
    assert "21 tensors" in result.output  # the logical ones
    assert "4-bit nf4, double quant, quantized from tiny" in result.output
    wrong = cli("push-model", str(q4), "--name", "x", "--kind", "finetune")
    assert wrong.exit_code != 0
    assert "--kind finetune needs --base" in wrong.output
