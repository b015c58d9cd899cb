"""Hostile compression requests, round two (issue 22): one Idempotency-Key sent by
racing requests, keys shared across tokens or reused for other requests, non-finite
numbers, and a cancellation that lands between a job's last progress point and its
completion. Races run as real concurrent requests against a live server on PostgreSQL."""

from __future__ import annotations

import json
import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select

from registry.jobs import runner
from registry.jobs.schemas import CompressRequest
from registry.tables import Adapter, Job
from tests.conftest import LiveServer, Tokens
from tests.registry.jobs.drive import run_all


def _count(app: FastAPI, table: type[Job] | type[Adapter]) -> int:
    with app.state.database.reading() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def _race(server: LiveServer, requests: list[tuple[str, dict[str, str], Any]]
          ) -> list[httpx.Response]:
    """POST each (path, headers, json) at the same moment, one thread and connection each."""
    barrier = Barrier(len(requests))

    def send(request: tuple[str, dict[str, str], Any]) -> httpx.Response:
        path, headers, body = request
        with httpx.Client(base_url=server.url, timeout=60) as http:
            barrier.wait()
            return http.post(path, json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(send, requests))


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.postgres
def test_racing_retries_with_one_key_get_one_job(app: FastAPI, live_server: LiveServer,
                                                 tokens: Tokens, finetune: str) -> None:
    rounds, racers = 20, 4
    for round_ in range(rounds):
        headers = {**tokens.compress, "Idempotency-Key": f"race-{round_}"}
        path = f"/models/{finetune}/compress?method=bitdelta"
        responses = _race(live_server, [(path, headers, {"alias": "prod"})] * racers)
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * (racers - 1) + [202], [r.text for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
    assert _count(app, Job) == rounds


def test_a_key_is_the_tokens_own(app: FastAPI, client: TestClient, tokens: Tokens,
                                 finetune: str) -> None:
    mine = client.post(f"/models/{finetune}/compress?method=bitdelta",
                       headers={**tokens.compress, "Idempotency-Key": "nightly"})
    theirs = client.post(f"/models/{finetune}/compress?method=bitdelta",
                         headers={**tokens.admin, "Idempotency-Key": "nightly"})
    assert (mine.status_code, theirs.status_code) == (202, 202), theirs.text
    assert mine.json()["id"] != theirs.json()["id"]
    assert _count(app, Job) == 2


@pytest.mark.parametrize(("method", "body"), [
    ("bitdelta", {"alias": "prod"}),
    ("bitdelta", {"name": "other-name"}),
    ("bitdelta", {"verify": "off"}),
    ("bitdelta", {"max_error": 0.5}),
    ("bitdelta", {"targets": ["q_proj"]}),
    ("bitdelta", {"scale_mode": "tensor"}),
    ("lora", {"rank": 2}),
])
def test_a_key_reused_for_another_request_is_refused(app: FastAPI, client: TestClient,
                                                     tokens: Tokens, finetune: str,
                                                     method: str, body: dict[str, Any]) -> None:
    headers = {**tokens.compress, "Idempotency-Key": "deploy-7"}
    first = client.post(f"/models/{finetune}/compress?method=bitdelta", headers=headers)
    assert first.status_code == 202
    # The same request spelt with its defaults is the same request.
    again = client.post(f"/models/{finetune}/compress?method=bitdelta",
                        json={"verify": "auto"}, headers=headers)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    other = client.post(f"/models/{finetune}/compress?method={method}", json=body,
                        headers=headers)
    assert other.status_code == 422, other.text
    assert other.json()["error"] == "IdempotencyKeyReused"
    assert _count(app, Job) == 1


def test_the_idempotency_key_format_is_documented_and_enforced(
        app: FastAPI, client: TestClient, tokens: Tokens, finetune: str) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/models/{model}/compress"]["post"]
    [header] = [p for p in operation["parameters"] if p["name"].lower() == "idempotency-key"]
    schema = json.dumps(header["schema"])
    assert '"maxLength": 128' in schema
    assert '"pattern": "^[\\\\x20-\\\\x7e]{1,128}$"' in schema
    for bad in (b"k" * 129, "caf\u00e9".encode(), b"tab\there"):
        response = client.post(f"/models/{finetune}/compress?method=bitdelta",
                               headers={**tokens.compress, "Idempotency-Key": bad})
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "ValidationError"
    assert _count(app, Job) == 0


@pytest.mark.parametrize("raw", ['{"max_error": Infinity}', '{"max_error": 1e999}',
                                 '{"max_error": NaN}', '{"max_error": -Infinity}'])
def test_non_finite_numbers_are_refused(app: FastAPI, client: TestClient, tokens: Tokens,
                                        finetune: str, raw: str) -> None:
    response = client.post(f"/models/{finetune}/compress?method=bitdelta", content=raw,
                           headers={**tokens.compress, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"
    assert "max_error" in response.json()["detail"]
    assert _count(app, Job) == 0


def _float_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """(dotted name, the model that holds it) of every float field, nested ones too."""
    found = []
    for name, info in model.model_fields.items():
        for kind in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if kind is float:
                found.append((f"{prefix}{name}", model))
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                found.extend(_float_fields(kind, f"{prefix}{name}."))
    return found


def test_every_float_of_the_request_must_be_finite() -> None:
    fields = _float_fields(CompressRequest)
    assert {"max_error", "target_error", "distill.lr"} <= {name for name, _ in fields}
    for name, holder in fields:
        leaf = name.rsplit(".", 1)[-1]
        for value in (math.inf, -math.inf, math.nan):
            with pytest.raises(ValidationError) as refused:
                holder.model_validate({leaf: value})
            assert "finite_number" in {e["type"] for e in refused.value.errors()
                                       if e["loc"] == (leaf,)}, (name, value)


def test_a_cancel_just_before_completion_publishes_nothing(
        app: FastAPI, client: TestClient, tokens: Tokens, finetune: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cancel lands after the attempt's last progress point (its outputs are stored),
    before the completing transaction: the job ends cancelled, with no adapter."""
    job = client.post(f"/models/{finetune}/compress?method=bitdelta",
                      json={"alias": "prod"}, headers=tokens.compress).json()
    answers: list[dict[str, Any]] = []
    fault_point = runner._fault_point

    def cancel_when_committed(point: str, job_id: int) -> None:
        if point == "committed":
            answers.append(client.post(f"/jobs/{job_id}/cancel",
                                       headers=tokens.compress).json())
        fault_point(point, job_id)

    monkeypatch.setattr(runner, "_fault_point", cancel_when_committed)
    assert run_all(app) == 1
    assert [(a["status"], a["cancel_requested"]) for a in answers] == [("running", True)]
    done = client.get(f"/jobs/{job['id']}", headers=tokens.read).json()
    assert (done["status"], done["adapter"]) == ("cancelled", None), done
    assert _count(app, Adapter) == 0


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.postgres
def test_a_cancel_racing_completion_is_answered_truthfully(
        app: FastAPI, live_server: LiveServer, client: TestClient, tokens: Tokens,
        finetune: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel sent over HTTP once the outputs are stored races the completing
    transaction for the job's row (the worker waits 0-500 ms for it, so either may
    win):
    a 200 means the job ends cancelled with no adapter, a 409 that it had succeeded."""
    pick, racing = random.Random(22), []
    fault_point = runner._fault_point

    def cancel_concurrently(point: str, job_id: int) -> None:
        if point == "committed":
            racing.append(_Cancel(live_server, tokens.compress, job_id))
            # A cancel takes a few hundred ms here (auth, a write turn, a loaded CPU).
            racing[-1].join(timeout=pick.uniform(0, 0.5))
        fault_point(point, job_id)

    monkeypatch.setattr(runner, "_fault_point", cancel_concurrently)
    outcomes = []
    for _ in range(8):
        job = client.post(f"/models/{finetune}/compress?method=bitdelta",
                          headers=tokens.compress).json()
        assert run_all(app) == 1
        cancel = racing[-1].answer()
        done = client.get(f"/jobs/{job['id']}", headers=tokens.read).json()
        if cancel.status_code == 200:
            assert (done["status"], done["adapter"]) == ("cancelled", None), done
        else:
            assert cancel.json()["error"] == "JobFinished", cancel.text
            assert done["status"] == "succeeded", done
        outcomes.append(done["status"])
    assert "cancelled" in outcomes, outcomes  # a cancel won the row at least once
    assert _count(app, Adapter) == min(1, outcomes.count("succeeded"))  # same content


class _Cancel(threading.Thread):
    """POST /jobs/{id}/cancel on a thread of its own, started at once."""

    def __init__(self, server: LiveServer, headers: dict[str, str], job_id: int) -> None:
        super().__init__()
        self.server, self.headers, self.job_id = server, headers, job_id
        self.response: httpx.Response | None = None
        self.start()

    def run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=60) as http:
            self.response = http.post(f"/jobs/{self.job_id}/cancel", headers=self.headers)

    def answer(self) -> httpx.Response:
        self.join(timeout=60)
        assert self.response is not None
        return self.response
