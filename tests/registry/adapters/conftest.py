"""Adapters of every PEFT type, made once per session on the tiny base."""

from __future__ import annotations

import pytest

from tests.peft_adapters import LABELS, MadeAdapter, make_peft_adapter
from tests.registry.conftest import TinyModels


@pytest.fixture(scope="session")
def peft_adapters(tiny_models: TinyModels,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, MadeAdapter]:
    root = tmp_path_factory.mktemp("peft-adapters")
    return {label: make_peft_adapter(tiny_models.base, label, root / label) for label in LABELS}
