"""The live API against its own OpenAPI document, checked by schemathesis.

uvicorn serves the app on loopback and schemathesis talks to it over real HTTP, on
SQLite and on PostgreSQL, as an admin (a token with every scope). Every check is on: no
5xx, status codes, bodies, headers and content types as documented, invalid input
refused, valid input accepted (ST202; where state may decide, by the error's name:
`document_states_the_rule`), auth enforced, deleted things gone. All four phases run
(examples, coverage, fuzzing, stateful), with example counts bounded so that the file
takes about three minutes on two cores.

schemathesis runs through its engine (what `st run` uses) rather than its pytest plugin:
the plugin's fixture-based loader, the only one that can reach a server a fixture starts,
reads `Function._nodeid`, which pytest 9 no longer has; and the engine runs the four
phases in order, as a CLI run would.

The database is seeded with a finalized base model and a LoRA adapter, so that lookups
by the names schemathesis learns from responses (and by small ids) find something.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.engine import Status, from_schema
from schemathesis.engine.events import (
    EngineFinished,
    FatalError,
    NonFatalError,
    PhaseFinished,
    ScenarioFinished,
)
from sqlalchemy import Engine, update

from registry.settings import Settings
from registry.tables import Token
from tests.conftest import LiveServer, Tokens
from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels

pytestmark = pytest.mark.slow

BASE = "llama-tiny"
ADAPTER = "support-bot"
# Per operation in the fuzzing phase; scenarios and steps in the stateful phase. Enough
# to reach the statuses each operation documents, few enough that both databases fit
# the file's three minutes on two cores.
FUZZ_EXAMPLES = 100
STATEFUL_SCENARIOS = 50
STATEFUL_STEPS = 10
PHASES = ("examples", "coverage", "fuzzing", "stateful")
# Each run draws a new seed; a failure message names it, and this replays that run.
SEED_ENV = "DELTAHUB_TEST_SCHEMATHESIS_SEED"
DEFAULT_SEED = 20261130

# The run's own token sits at an id no generated request names (generators favour 1,
# small numbers and the bounds): revoking it would leave every later request a 401,
# which every check accepts, so the rest of the run would test nothing.
RUN_TOKEN_ID = 7_654_321

# positive_data_acceptance expects 2xx/401/403/404/409 for input the document calls
# valid. Some validity no schema can state: that a base model exists and is a base,
# that uploaded bytes are a well-formed file of the kind its name says, that a draft has
# the files finalize needs, that a page_token came from the same query. There the
# documented 415/422 are the right answers to well-formed input too.
STATE_OR_CONTENT_DECIDES = {
    "POST /models": ["422"],  # unknown base, or a base given to a base model
    "POST /adapters": ["422"],  # unknown base or source model
    "PUT /models/{model}/files/{filename}": ["415", "422"],
    "PUT /adapters/{ref}/files/{filename}": ["415", "422"],
    "POST /models/{model}/finalize": ["422"],
    "POST /adapters/{ref}/finalize": ["422"],
    "POST /datasets": ["422"],  # `files` naming a file a data set does not take
    "PUT /datasets/{name}/files/{filename}": ["415", "422"],
    "POST /datasets/{name}/finalize": ["422"],  # a draft without files
    "GET /datasets": ["422"],  # page_token
    "GET /models": ["422"],  # page_token
    "GET /adapters": ["422"],  # page_token
    "GET /jobs": ["422"],  # page_token
    # a base model (not a fine-tune), options of the other method (the method is a query
    # parameter, so no body schema can tie them), targets no linear weight of the model has
    "POST /models/{model}/compress": ["422"],
    # a target whose host resolves to a loopback, private or metadata address (DNS
    # decides; the suite's resolver answers only for address literals and localhost)
    "POST /webhooks": ["422"],
    "PATCH /webhooks/{webhook_id}": ["422"],
}
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]

# The statuses above allow a 422 where state or content decides; the error name says
# whether it did. These names mean the request broke a rule of its own shape (a type, a
# range, a name's or file name's form, the kinds of file an owner takes), which the
# document states: a schema-valid request refused with one is a gap in the document.
SHAPE_ERRORS = frozenset({"ValidationError", "InvalidName", "InvalidFilename",
                          "UnsupportedFile"})
# Except where the shape rule hangs on state: which files an adapter takes depends on its
# kind (LoRA or BitDelta), given at creation; the document states what either takes.
SHAPE_DECIDED_BY_STATE = {
    "POST /adapters": {"UnsupportedFile"},  # `files` for the other kind (a body field)
    "PUT /adapters/{ref}/files/{filename}": {"UnsupportedFile"},
}


def _path_values_fit_the_document(case: Any) -> bool:
    """Whether every path value matches its parameter's declared pattern and length.

    Generated values always do; the stateful phase fills path parameters from links (a file
    name an adapter listed, used on a data set's route), and those need not.
    """
    for parameter in case.operation.path_parameters:
        value = (case.path_parameters or {}).get(parameter.name)
        schema = parameter.definition.get("schema", {})
        if not isinstance(value, str):
            continue
        if len(value) > schema.get("maxLength", len(value)):
            return False
        pattern = schema.get("pattern")
        if pattern is not None and re.search(pattern, value) is None:
            return False
    return True


@schemathesis.check
def document_states_the_rule(ctx: Any, response: Any, case: Any) -> bool | None:
    """ST202 by error name: a schema-valid request refused for its shape."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    name = body.get("error") if isinstance(body, dict) else None
    if name in SHAPE_ERRORS and not _path_values_fit_the_document(case):
        return None  # a stateful link filled the path from another answer: not schema-valid
    if name in SHAPE_ERRORS - SHAPE_DECIDED_BY_STATE.get(case.operation.label, set()):
        raise AssertionError(f"a schema-valid request was refused with {name} "
                             f"({response.status_code}): the document does not state the "
                             f"rule the server enforces: {body.get('detail')}")
    return None


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """GET /events long-polls up to its bound when nothing new comes: keep it short."""
    return settings.model_copy(update={"EVENTS_MAX_WAIT_SECONDS": 0.2})


@pytest.fixture
def seeded(live_server: LiveServer, client: TestClient, engine: Engine, tokens: Tokens,
           tiny_models: TinyModels) -> str:
    """The live server's URL, once it holds a finalized base model and LoRA adapter."""
    register_model(client, tokens.push, BASE, tiny_models.base)
    pushed = push_adapter(client, tokens.push, ADAPTER, BASE, tiny_models.lora)
    assert pushed.status_code == 201, pushed.text
    with engine.begin() as conn:
        moved = conn.execute(update(Token).where(Token.name == "test-admin")
                             .values(id=RUN_TOKEN_ID))
        assert moved.rowcount == 1
    return live_server.url


def schemathesis_config(url: str, token: str) -> schemathesis.Config:
    operations: list[dict[str, Any]] = [
        {"include-name": name, "checks": {"positive_data_acceptance": {
            "expected-statuses": [*_ACCEPTED, *statuses]}}}
        for name, statuses in STATE_OR_CONTENT_DECIDES.items()
    ]
    # Revoking tokens is left out: once the fuzzer holds two admin tokens it may revoke the
    # one the run uses, and every later request is a 401 (tests/registry/auth covers it).
    operations.append({"include-name": "DELETE /tokens/{token_id}", "enabled": False})
    # A fixed seed by default, so CI judges the code and not the dice; set the variable to
    # "random" to explore (a failure prints the seed that replays it).
    chosen = os.environ.get(SEED_ENV, str(DEFAULT_SEED))
    seed = {} if chosen == "random" else {"seed": int(chosen)}
    return schemathesis.Config.from_dict({
        **seed,
        "base-url": url,
        "request-timeout": 30,
        "workers": 1,
        # Report every failure of an operation, not only its first: the report is a to-do list.
        "continue-on-failure": True,
        "checks": {"enabled": True},
        "generation": {"database": "none"},
        # A data set's file name must end in one of three suffixes in any case, a lookahead
        # Hypothesis meets by filtering; its health check then calls the pattern too narrow,
        # though every value it does generate is a real file name the server takes.
        "suppress-health-check": ["filter_too_much"],
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True, "generation": {"max-examples": FUZZ_EXAMPLES}},
            "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS,
                         "generation": {"max-examples": STATEFUL_SCENARIOS}},
        },
        "auth": {"openapi": {"bearerAuth": {"bearer": token}}},
        "operations": operations,
    })


@dataclass(frozen=True)
class Finding:
    """One failed check: what schemathesis sent, what came back, which check failed."""

    phase: str
    check: str
    title: str
    message: str
    curl: str
    status: int | None

    def __str__(self) -> str:
        got = f" -> {self.status}" if self.status is not None else ""
        return (f"[{self.phase}] {self.check}: {self.title}{got}\n    {self.curl}\n"
                f"    {self.message[:600]}")


def _findings(event: ScenarioFinished) -> list[Finding]:
    found = []
    recorder = event.recorder
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status is not Status.FAILURE or check.failure_info is None:
                continue
            response = recorder.find_response(case_id=case_id)
            failure = check.failure_info.failure
            found.append(Finding(
                phase=event.phase.value, check=check.name, title=failure.title,
                message=failure.message, curl=check.failure_info.code_sample,
                status=response.status_code if response is not None else None))
    return found


@dataclass
class Run:
    findings: list[Finding]
    errors: list[str]  # what kept an operation or a phase from being tested
    phases_run: set[str]


def run_schemathesis(schema: Any) -> Run:
    run = Run(findings=[], errors=[], phases_run=set())
    finished = False
    for event in from_schema(schema).execute():
        if isinstance(event, ScenarioFinished):
            run.findings.extend(_findings(event))
        elif isinstance(event, PhaseFinished) and event.phase.is_enabled:
            run.phases_run.add(event.phase.name.value)
        elif isinstance(event, NonFatalError):
            run.errors.append(f"{event.label} [{event.phase}]: {event.info.format()}")
        elif isinstance(event, FatalError):
            run.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, EngineFinished):
            finished = True
    assert finished, "schemathesis stopped before the end of its run"
    return run


def test_live_api_keeps_its_document(seeded: str, client: TestClient, tokens: Tokens) -> None:
    token = tokens.admin["Authorization"].removeprefix("Bearer ")
    schema = schemathesis.openapi.from_url(f"{seeded}/openapi.json",
                                           config=schemathesis_config(seeded, token))
    run = run_schemathesis(schema)
    unique = {(f.check, f.title, f.curl): f for f in run.findings}
    report = "\n".join(str(f) for f in unique.values())
    report += f"\nreplay with {SEED_ENV}={schema.config.seed}"
    assert not run.errors, "\n".join(run.errors)
    assert not unique, f"{len(unique)} failed checks:\n{report}"
    # Against a hollow pass: every phase ran, and the run's token stayed valid throughout.
    assert set(PHASES) <= run.phases_run
    assert client.get("/tokens", headers=tokens.admin).status_code == 200
