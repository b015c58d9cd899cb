"""'Did you mean': close matches for unknown names, from a bounded read of names."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert

from registry.infra.engines import make_session_factory, unit_of_work
from registry.models.repository import SUGGESTION_SCAN, ModelRepository
from registry.names import MAX_SUGGESTIONS, close_matches
from registry.tables import Model, ModelKind, Status
from tests.conftest import Tokens


def test_close_matches_are_few_best_first_and_case_blind() -> None:
    names = ["tiny-llama", "tiny-llama-2", "tiny-llamas", "tiny-llama-chat", "mistral"]
    assert close_matches("tiny-lama", names)[0] == "tiny-llama"
    assert len(close_matches("tiny-llama-x", names)) == MAX_SUGGESTIONS
    assert close_matches("TINY-LLAMA", ["tiny-llama"]) == ["tiny-llama"]
    assert close_matches("qwen", names) == []
    assert close_matches("x", []) == []


def test_suggestions_read_a_bounded_number_of_names(engine: Engine, client: TestClient,
                                                    tokens: Tokens) -> None:
    # Many newer names that look nothing like the one asked for, and many that look
    # alike: the typo's match must still be found, and no query reads them all.
    rows = [{"name": f"zz-model-{i:04d}", "kind": ModelKind.BASE, "status": Status.PENDING}
            for i in range(SUGGESTION_SCAN * 2)]
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        session.add(Model(name="tiny-llama", kind=ModelKind.BASE, status=Status.PENDING))
        session.flush()
        session.execute(insert(Model), rows)
    with unit_of_work(factory) as session:
        candidates = ModelRepository(session).candidate_names("tiny-lama")
    assert len(candidates) <= 3 * SUGGESTION_SCAN
    assert "tiny-llama" in candidates
    missing = client.get("/models/tiny-lama", headers=tokens.read).json()
    assert missing["did_you_mean"] == ["tiny-llama"]
    by_kind = client.post("/models", json={"name": "ft", "kind": "finetune",
                                           "base": "zz-model-0001x"}, headers=tokens.push)
    assert by_kind.status_code == 404
    assert by_kind.json()["did_you_mean"][0] == "zz-model-0001"
