"""`deltahub push` infers lora or peft from adapter_config.json's peft_type; `ls` filters
by kind and PEFT type; `show` says where the adapter can be served (issue 28)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peft_adapters import make_peft_adapter
from tests.registry.cli.conftest import Cli
from tests.registry.conftest import TinyModels

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_push_infers_the_kind_and_show_says_where_it_serves(
        cli: Cli, tiny_models: TinyModels, tmp_path: Path) -> None:
    assert cli("push-model", str(tiny_models.base), "--name", "llama-tiny").exit_code == 0
    for label in ("ia3", "dora"):
        made = make_peft_adapter(tiny_models.base, label, tmp_path / label)
        pushed = cli("push", str(made.path), "--base", "llama-tiny", "--name", label)
        assert pushed.exit_code == 0, pushed.output

    listed = cli("ls", "adapters", "--kind", "peft", "--peft-type", "IA3", "--json")
    assert listed.exit_code == 0, listed.output
    assert '"name": "ia3"' in listed.output
    assert '"name": "dora"' not in listed.output
    lora = cli("ls", "adapters", "--kind", "lora", "--json")
    assert '"name": "dora"' in lora.output
    assert '"name": "ia3"' not in lora.output

    table = cli("ls", "adapters")
    assert "peft (IA3)" in table.output
    shown = cli("show", "ia3")
    assert shown.exit_code == 0, shown.output
    assert "where it can be served" in shown.output
    assert "vLLM loads LoRA adapters only, not IA3" in shown.output
    assert "merge_and_unload" in shown.output
    dora = cli("show", "dora")
    assert "DoRA is not supported by vLLM" in dora.output
    assert "peft=" not in dora.output  # the record has its own table, not the params row
