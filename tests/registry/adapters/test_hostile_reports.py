"""A pushed report.json is checked whole at finalize: every number a float can hold, every
name and list within its bound, or a 422 InvalidReport naming the value's path, and no
version made.

Before, a 400-digit `gain_kept` was a 500 (OverflowError) at finalize, and the same number
deeper in the report was stored and broke the adapter's page for good.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.api import register_model
from tests.registry.conftest import TinyModels

BASE = "llama-tiny"
HUGE = 10**400  # json.dumps writes it as 401 digits, which Python reads back exactly
LONG_NAME = "model.layers.0." + "x" * 5000 + ".weight"


def _report(**extra: Any) -> dict[str, Any]:
    """A LoRA report with the parts pages and plots read."""
    return {"format": "deltahub-lora-report", "version": 1, "rank": 4,
            "summary": {"modules": 2, "max_error": 0.2, "mean_error": 0.1},
            "modules": [{"module": f"model.layers.{i}.self_attn.q_proj", "rank": 4,
                         "error": 0.1 * (i + 1), "singular_values": [3.0, 2.0, 1.0]}
                        for i in range(2)],
            **extra}


def _evaluation(tokens: Any = 4096, loss: Any = 1.25) -> dict[str, Any]:
    return {"datasets": [{"name": "held-out", "tokens": tokens, "base": {"loss": 2.0},
                          "finetune": {"loss": 1.0}, "compressed": {"loss": loss},
                          "gain_kept": 0.75}]}


def _finalize(client: TestClient, headers: dict[str, str], directory: Path,
              report: dict[str, Any]) -> Any:
    (directory / "report.json").write_text(json.dumps(report))
    draft = client.post("/adapters", json={"name": "bot", "base": BASE, "kind": "lora"},
                        headers=headers)
    assert draft.status_code == 201, draft.text
    for path in sorted(directory.iterdir()):
        put = client.put(f"/adapters/{draft.json()['id']}/files/{path.name}",
                         content=path.read_bytes(), headers=headers)
        assert put.status_code == 201, put.text
    return client.post(f"/adapters/{draft.json()['id']}/finalize", headers=headers)


@pytest.fixture
def lora(client: TestClient, tokens: Tokens, tiny_models: TinyModels, tmp_path: Path) -> Path:
    register_model(client, tokens.push, BASE, tiny_models.base)
    return Path(shutil.copytree(tiny_models.lora, tmp_path / "lora"))


def _assert_nothing_published(client: TestClient, tokens: Tokens) -> None:
    listed = client.get("/adapters", params={"name": "bot"}, headers=tokens.read)
    assert listed.json()["items"] == []
    assert client.get("/adapters/bot@1", headers=tokens.read).status_code == 404
    pulled = client.get("/adapters/bot@1/files/report.json", headers=tokens.read)
    assert pulled.status_code == 404


@pytest.mark.parametrize(("report", "path"), [
    (_report(gain_kept=HUGE), "$.gain_kept"),
    (_report(gain_kept=-HUGE), "$.gain_kept"),
    (_report(evaluation=_evaluation(tokens=HUGE)), "$.evaluation.datasets[0].tokens"),
    (_report(evaluation=_evaluation(loss=HUGE)), "$.evaluation.datasets[0].compressed.loss"),
    (_report(tensors=[{"name": "lm_head.weight", "kind": "bitdelta",
                       "weight_rel_error": HUGE}]), "$.tensors[0].weight_rel_error"),
    (_report(distillation={"losses": [2.0, HUGE, 1.0]}), "$.distillation.losses[1]"),
], ids=["gain_kept", "negative", "tokens", "loss", "tensor_error", "distill_loss"])
def test_a_number_no_float_holds_is_refused_with_its_path(
        client: TestClient, tokens: Tokens, lora: Path, report: dict[str, Any],
        path: str) -> None:
    refused = _finalize(client, tokens.push, lora, report)
    assert (refused.status_code, refused.json()["error"]) == (422, "InvalidReport")
    assert f"report.json holds {path}: an integer of" in refused.json()["detail"]
    _assert_nothing_published(client, tokens)


def test_integers_are_kept_up_to_the_bound(client: TestClient, tokens: Tokens,
                                           lora: Path) -> None:
    refused = _finalize(client, tokens.push, lora, _report(summary={"modules": 2**63}))
    assert (refused.status_code, refused.json()["error"]) == (422, "InvalidReport")
    assert "$.summary.modules: an integer of 19 digits" in refused.json()["detail"]
    draft = refused.url.path.removesuffix("/finalize")
    fixed = json.dumps(_report(summary={"modules": 2**63 - 1},
                               evaluation=_evaluation(tokens=-(2**63 - 1))))
    assert client.put(f"{draft}/files/report.json", content=fixed,
                      headers=tokens.push).status_code == 201
    final = client.post(f"{draft}/finalize", headers=tokens.push)
    assert final.status_code == 201, final.text
    assert final.json()["quality"]["summary"]["modules"] == 2**63 - 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("change", "path", "what"), [
    (lambda r: r["modules"][1].update(module=LONG_NAME), "$.modules[1].module",
     f"a string of {len(LONG_NAME)} characters, over the limit of 4096"),
    (lambda r: r.update({LONG_NAME: 1}), "$",
     f"a key of {len(LONG_NAME)} characters, over the limit of 4096"),
    (lambda r: r["modules"][0].update(singular_values=[1.0] * 65537),
     "$.modules[0].singular_values", "an array of 65537 items, over the limit of 65536"),
], ids=["name", "key", "list"])
def test_names_and_lists_past_their_bounds_are_refused(
        client: TestClient, tokens: Tokens, lora: Path, change: Any, path: str,
        what: str) -> None:
    report = _report()
    change(report)
    refused = _finalize(client, tokens.push, lora, report)
    assert (refused.status_code, refused.json()["error"]) == (422, "InvalidReport")
    assert f"report.json holds {path}: {what}" in refused.json()["detail"]
    _assert_nothing_published(client, tokens)
