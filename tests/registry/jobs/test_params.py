"""A job's params as one typed document: built when queued, parsed once from the row,
legacy keys read once, and the row's JSON unchanged by the typing."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import update

from registry.jobs.params import BitDeltaParams, LoraParams, parse_params
from registry.tables import CompressMethod, Job
from tests.conftest import Tokens
from tests.registry.jobs.drive import run_all

_PINNED = {"name": "py", "digest": "ab" * 32}
# The JSON of rows as the API wrote them before the params were typed, key order included.
_BITDELTA_ROW: dict[str, Any] = {
    "targets": ["q_proj"], "verify": "auto", "max_error": None, "scale_mode": "row",
    "distill": {"dataset": _PINNED, "steps": 2, "lr": 1e-4, "batch_size": 4, "seq_len": 8,
                "seed": 0},
    "evaluate": {"datasets": [_PINNED], "batch_size": 4, "seq_len": 8, "max_batches": 3}}
_LORA_ROW: dict[str, Any] = {
    "targets": ["q_proj", "v_proj"], "verify": "auto", "max_error": 0.5, "rank": None,
    "target_error": 0.1, "max_rank": 32, "targets_only": True}


@pytest.mark.parametrize(("method", "row"), [(CompressMethod.BITDELTA, _BITDELTA_ROW),
                                             (CompressMethod.LORA, _LORA_ROW)])
def test_a_row_round_trips_to_the_same_json(method: CompressMethod,
                                            row: dict[str, Any]) -> None:
    params = parse_params(method, row)
    assert list(params.to_json().items()) == list(row.items())


def test_absent_sections_stay_absent() -> None:
    params = BitDeltaParams(targets=["q_proj"], verify="off")
    assert params.to_json() == {"targets": ["q_proj"], "verify": "off", "max_error": None,
                                "scale_mode": "row"}
    assert params.distill is None
    assert params.evaluate is None


@pytest.mark.parametrize(("legacy", "targets_only"), [(True, False), (False, True)])
def test_the_legacy_save_modules_key_is_read_once(legacy: bool, targets_only: bool) -> None:
    old = {**_LORA_ROW, "save_modules": legacy}
    del old["targets_only"]
    params = parse_params(CompressMethod.LORA, old)
    assert isinstance(params, LoraParams)
    assert params.targets_only is targets_only
    assert "save_modules" not in params.to_json()


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_a_non_finite_number_is_refused(number: float) -> None:
    with pytest.raises(ValidationError):
        parse_params(CompressMethod.LORA, {**_LORA_ROW, "max_error": number})
    with pytest.raises(ValidationError):
        parse_params(CompressMethod.BITDELTA,
                     {**_BITDELTA_ROW, "distill": {**_BITDELTA_ROW["distill"], "lr": number}})


def test_a_job_row_in_the_old_shape_still_runs_as_asked(app: FastAPI, client: TestClient,
                                                         tokens: Tokens, finetune: str) -> None:
    """A LoRA job queued before targets_only existed (its row says save_modules) is shown,
    run and recorded with what it asked for."""
    started = client.post(f"/models/{finetune}/compress?method=lora",
                          json={"rank": 4, "name": "old-lora"}, headers=tokens.compress)
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    old = {"targets": ["q_proj"], "verify": "auto", "max_error": None, "rank": 4,
           "target_error": None, "max_rank": None, "save_modules": False}
    with app.state.database.writing() as session:
        session.execute(update(Job).where(Job.id == job_id).values(params=old))
    shown = client.get(f"/jobs/{job_id}", headers=tokens.read)
    assert shown.status_code == 200, shown.text
    assert shown.json()["params"]["targets_only"] is True
    run_all(app)
    done = client.get(f"/jobs/{job_id}", headers=tokens.read).json()
    assert done["status"] == "succeeded", done
    adapter = client.get(f"/adapters/{done['adapter']['id']}", headers=tokens.read).json()
    assert adapter["params"]["codec"]["targets_only"] is True
    assert adapter["params"]["saved_tensors"] == []  # targets only: nothing else carried
