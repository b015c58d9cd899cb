"""The tiny fine-tune registered for jobs, and the tiny real fine-tune (tests/finetune.py)
for jobs that distill and evaluate."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels


@pytest.fixture
def finetune(client: TestClient, tokens: Tokens, tiny_models: TinyModels) -> str:
    register_model(client, tokens.push, "tiny-base", tiny_models.base)
    register_model(client, tokens.push, "tiny-ft", tiny_models.finetune, kind="finetune",
                   base="tiny-base")
    return "tiny-ft"
