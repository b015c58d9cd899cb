"""The fine-tune page's compress form against hostile input (issue 22): every refusal is
a 4xx page naming the problem, and nothing is queued."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.finetune import FinetunePair
from tests.registry.api import push_dataset
from tests.registry.ui.conftest import FINETUNE, Seeded, sign_in

URL = f"/ui/models/{FINETUNE}/compress"


def _refused(client: TestClient, tokens: Tokens, form: dict[str, str]) -> str:
    csrf = sign_in(client, tokens.admin)
    answer = client.post(URL, data={"csrf_token": csrf, "method": "bitdelta", **form})
    assert answer.status_code == 422, answer.text[-600:]
    assert client.get("/jobs", headers=tokens.read).json()["items"] == []
    return answer.text


def test_deeply_nested_advanced_options_are_refused(client: TestClient, tokens: Tokens,
                                                    seeded: Seeded) -> None:
    page = _refused(client, tokens, {"advanced": "[" * 4990 + "]" * 4990})
    assert "InvalidJobParameters" in page
    assert "nested 4990 deep, over the limit of 64" in page


@pytest.mark.parametrize("form", [{"max_error": "inf"}, {"max_error": "1e999"},
                                  {"max_error": "nan"},
                                  {"advanced": '{"max_error": Infinity}'},
                                  {"advanced": '{"max_error": 1e999}'}])
def test_non_finite_numbers_are_refused(client: TestClient, tokens: Tokens, seeded: Seeded,
                                        form: dict[str, str]) -> None:
    page = _refused(client, tokens, form)
    assert "InvalidJobParameters" in page
    assert "max_error" in page or "Infinity" in page


def test_the_forms_distillation_meets_the_jobs_limits(
        client: TestClient, tokens: Tokens, seeded: Seeded,
        finetune_pair: FinetunePair) -> None:
    push_dataset(client, tokens.push, "ids", finetune_pair.python.train)
    page = _refused(client, tokens, {"distill_dataset": "ids", "distill_seq_len": "8192"})
    assert "SequenceTooLong" in page
    assert "max_position_embeddings of 64" in page
