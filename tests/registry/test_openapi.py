"""The OpenAPI document says what the API does: errors, auth, uploads, names, limits.

Structural checks on /openapi.json, plus the two places where the document restates a
rule the code enforces (name patterns, error bodies), held to that code.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.app import create_app
from registry.errors import (
    APIError,
    IncompatibleBase,
    InvalidFilename,
    InvalidName,
    ModelNotFound,
)
from registry.infra.openapi import (
    ADAPTER_REF_RULE,
    FILENAME_RULE,
    MODEL_REF_RULE,
    NAME_RULE,
    SHA256_HEADER_NAME,
)
from registry.infra.openapi_errors import SERVICE_ERRORS
from registry.infra.openapi_rules import ADAPTER_FILE_RULE, DATASET_FILE_RULE, MODEL_FILE_RULE
from registry.infra.pagination import encode_cursor
from registry.names import check_filename, check_name, is_id
from registry.settings import Settings
from registry.tables import AdapterKind
from registry.uploads.flow import SHA256_HEADER
from registry.uploads.rules import adapter_file_rule, dataset_file_rule, model_file_rule
from tests.conftest import LiveServer, Tokens

PAGE_CAP = 37  # not the default, so the document must have read it from the settings
PUBLIC = {"/healthz", "/readyz"}
UPLOADS = {"/models/{model}/files/{filename}", "/adapters/{ref}/files/{filename}",
           "/datasets/{name}/files/{filename}"}
FINALIZE = {"/models/{model}/finalize", "/adapters/{ref}/finalize",
            "/datasets/{name}/finalize"}
ERROR_REF = "#/components/schemas/ErrorOut"

Operation = tuple[str, str, dict[str, Any]]


@pytest.fixture(scope="module")
def document_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The document does not depend on the database; one app serves every test here."""
    root = tmp_path_factory.mktemp("openapi")
    app = create_app(Settings(
        _env_file=None, DATABASE_URL=f"sqlite:///{root / 'deltahub.db'}",
        STORAGE_URL=f"file://{root / 'blobs'}", MAX_PAGE_SIZE=PAGE_CAP))
    yield app
    app.state.database.dispose()


@pytest.fixture(scope="module")
def document(document_app: FastAPI) -> dict[str, Any]:
    with TestClient(document_app) as client:
        served = client.get("/openapi.json")
    assert served.status_code == 200
    body: dict[str, Any] = served.json()
    return body


def operations(document: dict[str, Any]) -> Iterator[Operation]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def test_the_document_is_built_once(document_app: FastAPI, document: dict[str, Any]) -> None:
    assert document_app.openapi() is document_app.openapi()
    assert document_app.openapi() == document


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    from openapi_spec_validator import validate  # imported here: only this test needs it

    validate(document)


def test_every_error_response_has_the_error_body(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path == "/readyz" and status == "503"):
                continue
            content = dict(response["content"])
            if status == "400":  # also the HTTP server's own plain-text answer
                assert content.pop("text/plain") == {"schema": {"type": "string"}}
                if not content:
                    continue
            assert content == {"application/json": {"schema": {"$ref": ERROR_REF}}}, (
                method, path, status)
            assert response["description"], (method, path, status)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    error = schemas["ErrorOut"]
    assert error["required"] == ["error", "detail"]
    mismatches = error["properties"]["mismatches"]
    assert mismatches["items"] == {"type": "string"}
    assert mismatches["type"] == "array"  # absent when there is no list, never null
    assert "default" not in mismatches
    assert error["additionalProperties"] is False


def test_authenticated_operations_document_bearer_auth(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, operation in operations(document):
        if path in PUBLIC:
            assert operation["security"] == [], path
            assert not {"401", "403"} & set(operation["responses"]), path
            continue
        [requirement] = operation["security"]
        assert list(requirement) == ["bearerAuth"], (method, path)
        assert requirement["bearerAuth"][0] in {"read", "push", "compress", "admin"}
        assert {"401", "403", "503"} <= set(operation["responses"]), (method, path)
        retry_after = operation["responses"]["503"]["headers"]["Retry-After"]
        assert retry_after["required"] is True
        assert retry_after["schema"]["type"] == "integer"


def test_scopes_match_what_the_server_enforces(document: dict[str, Any], client: TestClient,
                                               tokens: Tokens) -> None:
    lacking = {"read": tokens.push, "push": tokens.read, "compress": tokens.read,
               "admin": tokens.push}
    for method, path, operation in operations(document):
        if path in PUBLIC:
            continue
        [scope] = operation["security"][0]["bearerAuth"]
        concrete = re.sub(r"\{[^}]+\}", "x1", path)
        refused = client.request(method, concrete, headers=lacking[scope])
        assert refused.status_code == 403, (method, path, scope)
        allowed = client.request(method, concrete, headers=getattr(tokens, scope))
        assert allowed.status_code not in (401, 403), (method, path, scope)


def test_errors_follow_what_each_operation_takes(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        statuses = set(operation["responses"])
        has_params = any(p["in"] in ("path", "query") for p in operation.get("parameters", []))
        if "{" in path:
            assert "404" in statuses, (method, path)
        if has_params or "requestBody" in operation:
            assert "422" in statuses, (method, path)
        if path in UPLOADS and method == "put":
            assert {"408", "409", "413", "415", "422"} <= statuses, (method, path)
        elif "requestBody" in operation:
            assert {"400", "413", "422"} <= statuses, (method, path)
        if path in FINALIZE:
            assert {"409", "422"} <= statuses, (method, path)
    assert "422" not in document["paths"]["/tokens"]["get"]["responses"]  # takes nothing


def test_service_errors_name_real_operations(document: dict[str, Any]) -> None:
    for method, path in SERVICE_ERRORS:
        assert method in document["paths"].get(path, {}), (method, path)


def test_uploads_take_raw_bytes_and_an_optional_checksum(document: dict[str, Any]) -> None:
    for path in UPLOADS:
        operation = document["paths"][path]["put"]
        body = operation["requestBody"]
        assert body["required"] is True
        assert body["content"] == {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}
        [checksum] = [p for p in operation["parameters"] if p["in"] == "header"]
        assert checksum["name"] == SHA256_HEADER_NAME
        assert checksum["required"] is False
        assert SHA256_HEADER_NAME.lower() == SHA256_HEADER


def test_downloads_are_octet_streams(document: dict[str, Any]) -> None:
    for path in UPLOADS:  # each file uploaded to a path is downloaded from it
        ok = document["paths"][path]["get"]["responses"]["200"]
        assert list(ok["content"]) == ["application/octet-stream"]
        assert ok["headers"][SHA256_HEADER_NAME]["required"] is True


def test_names_and_limits_are_constrained(document: dict[str, Any]) -> None:
    expected = {"model": MODEL_REF_RULE, "base": MODEL_REF_RULE, "ref": ADAPTER_REF_RULE,
                "alias": NAME_RULE, "name": NAME_RULE, "filename": FILENAME_RULE}
    seen = set()
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            schema, name = parameter["schema"], parameter["name"]
            assert "anyOf" not in schema, (method, path, name)  # absent, never null
            if name == "filename" and path in UPLOADS and method == "put":
                continue  # the owner's own rule: test_uploads_name_the_files_each_owner_takes
            if name in expected:
                seen.add(name)
                assert schema["pattern"] == expected[name], (method, path, name)
            if name == "limit":
                seen.add(name)
                assert (schema["minimum"], schema["maximum"]) == (1, PAGE_CAP)
            if name == "token_id":
                assert schema["minimum"] == 1
    assert seen == {*expected, "limit"}
    name = document["paths"]["/adapters"]["get"]["parameters"]
    assert next(p for p in name if p["name"] == "name")["schema"]["maxLength"] == 128
    filename = document["paths"]["/models/{model}/files/{filename}"]["get"]["parameters"]
    assert next(p for p in filename if p["name"] == "filename")["schema"]["maxLength"] == 255
    bodies = document["components"]["schemas"]
    assert bodies["ModelCreate"]["properties"]["name"]["pattern"] == NAME_RULE
    assert bodies["AdapterCreate"]["properties"]["base"]["pattern"] == MODEL_REF_RULE
    assert bodies["TokenCreate"]["properties"]["scopes"]["items"]["enum"] == [
        "read", "push", "compress", "admin"]


# --- the patterns restate registry/names.py; hold them to it ---------------------------

EDGES = ["a", "A0", "llama2-7b", "a.b_c-d", "a" * 128, "a" * 129, "7", "0123", "x" * 255,
         "x" * 256, "a..b", "..", ".a", "-a", "_a", "a/b", "a\\b", "a b", "a\n", "\na",
         "a\x00", "é", "a%2e", "%2e%2e", "²", "١", "a@1", "a:b", "a@", "@1", "a:1", "1:a",
         "1@2", "a@b", "a:b:c", "a@1@2", "a:b@1", "a@" + "9" * 30, ""]
# Short strings over an alphabet with every character the rules treat specially.
candidates = st.text(alphabet="aZ09._-@:/ \n\x00é²", max_size=12)


def valid(rule: str, value: str) -> bool:
    # jsonschema_rs reads patterns as clients do (ECMA-262: `$` is the very end).
    return bool(jsonschema_rs.validator_for({"type": "string", "pattern": rule})
                .is_valid(value))


def accepts(check: Any, value: str, refused: type[Exception]) -> bool:
    try:
        check(value)
    except refused:
        return False
    return True


def model_ref_accepted(value: str) -> bool:
    return is_id(value) or accepts(check_name, value, InvalidName)


@pytest.mark.parametrize("value", EDGES)
def test_name_patterns_match_the_checks(value: str) -> None:
    assert valid(NAME_RULE, value) == accepts(check_name, value, InvalidName)
    assert valid(FILENAME_RULE, value) == accepts(check_filename, value, InvalidFilename)
    assert valid(MODEL_REF_RULE, value) == model_ref_accepted(value)


@settings(max_examples=300, deadline=None)
@given(candidates)
def test_name_patterns_match_the_checks_on_any_string(value: str) -> None:
    test_name_patterns_match_the_checks(value)


def test_reference_patterns_match_the_server(live_server: LiveServer, tokens: Tokens) -> None:
    """What the adapter and model lookups refuse as malformed (422), the patterns refuse.

    Over real HTTP: the test client decodes a path twice, the server once.
    """
    # Not sendable as one path segment: "" and "/" change the route, ".." is resolved away.
    values = [v for v in EDGES if v and "/" not in v and v != ".."]
    with httpx.Client(base_url=live_server.url, headers=tokens.read) as http:
        for value in values:
            quoted = urllib.parse.quote(value, safe="")
            adapter = http.get(f"/adapters/{quoted}").status_code
            model = http.get(f"/models/{quoted}").status_code
            assert (adapter != 422) == valid(ADAPTER_REF_RULE, value), (value, adapter)
            assert (model != 422) == valid(MODEL_REF_RULE, value), (value, model)


def test_error_bodies_the_server_sends_match_the_error_schema(
        document: dict[str, Any], client: TestClient, tokens: Tokens) -> None:
    error = jsonschema_rs.validator_for(document["components"]["schemas"]["ErrorOut"])
    sent = [
        client.get("/models"),  # 401
        client.post("/models", json={"name": "m", "kind": "base"}, headers=tokens.read),  # 403
        client.get("/models/nope", headers=tokens.read),  # 404 from a service
        client.get("/nowhere", headers=tokens.read),  # 404 from routing
        client.patch("/models", headers=tokens.read),  # 405
        client.get("/models", params={"limit": "many"}, headers=tokens.read),  # 422
        client.post("/models", content=b"\x80{}", headers={  # not UTF-8
            **tokens.push, "Content-Type": "application/json"}),  # 400
        client.post("/models", content=b"[" * (2**20 + 1), headers=tokens.push),  # 413
    ]
    assert [r.status_code for r in sent] == [401, 403, 404, 404, 405, 422, 400, 413]
    for response in sent:
        assert response.headers["content-type"] == "application/json"
        assert error.is_valid(response.json()), response.text
    mismatch = IncompatibleBase("shapes differ", mismatches=["layers.0.q_proj: (4, 4) vs (4, 8)"])
    assert error.is_valid(mismatch.body())
    suggested = ModelNotFound("no model 'tiny-lama'", did_you_mean=["tiny-llama"])
    assert error.is_valid(suggested.body())
    assert "did_you_mean" not in ModelNotFound("no model 'x'", did_you_mean=[]).body()


# --- the file names each owner takes, and the page token's form ---------------------------

OWNER_FILE_RULES = {"/models/{model}/files/{filename}": MODEL_FILE_RULE,
                    "/adapters/{ref}/files/{filename}": ADAPTER_FILE_RULE,
                    "/datasets/{name}/files/{filename}": DATASET_FILE_RULE}


def test_uploads_name_the_files_each_owner_takes(document: dict[str, Any]) -> None:
    for path, rule in OWNER_FILE_RULES.items():
        parameters = document["paths"][path]["put"]["parameters"]
        filename = next(p for p in parameters if p["name"] == "filename")["schema"]
        assert (filename["pattern"], filename["maxLength"]) == (rule, 255), path
    bodies = document["components"]["schemas"]
    for body, rule in (("ModelCreate", MODEL_FILE_RULE), ("AdapterCreate", ADAPTER_FILE_RULE),
                       ("DatasetCreate", DATASET_FILE_RULE),
                       ("FinalizeRequest", FILENAME_RULE)):
        files = bodies[body]["properties"]["files"]["anyOf"]
        names = next(b for b in files if b.get("type") == "object")["propertyNames"]
        assert names["pattern"] == rule, body


def test_page_tokens_have_the_form_the_server_takes(document: dict[str, Any],
                                                    client: TestClient,
                                                    tokens: Tokens) -> None:
    schemas = [p["schema"] for _, _, operation in operations(document)
               for p in operation.get("parameters", []) if p["name"] == "page_token"]
    assert len(schemas) == 5  # models, adapters, jobs, data sets, webhook deliveries
    for schema in schemas:
        assert (schema["pattern"], schema["maxLength"]) == ("^[A-Za-z0-9_-]*$", 256)
    # What the pattern refuses the server refuses, even where it would decode to a cursor
    # of this very query.
    issued = encode_cursor(1, {"kind": None, "base": None})  # GET /models, no filters
    assert client.get("/models", params={"page_token": issued},
                      headers=tokens.read).status_code == 200
    for token in (issued + "==", issued + "\n", " " + issued, "a" * 257):
        refused = client.get("/models", params={"page_token": token}, headers=tokens.read)
        assert refused.status_code == 422, token
        assert refused.json()["error"] == "InvalidPageToken"


FILE_EDGES = ["model.safetensors", "config.json", "tokenizer.model", "merges.txt",
              "README.md", "a.md", "model.SAFETENSORS", "a.TXT", "a.JsonL", "ids.safetensors",
              "data.jsonl", "pytorch_model.bin", "a.pt", "a.pkl", "a.png", "spectra.png",
              "A.PNG", ".png", "report.json", "adapter_config.json",
              "adapter_model.safetensors", "delta.safetensors", "delta.safetensors.index.json",
              "delta-00001-of-00002.safetensors", "delta-1-of-2.safetensors",
              "delta-0000١-of-00002.safetensors", "a..json", "x" * 250 + ".json",
              "x" * 251 + ".json", "json", ".json", "a.json/", "a.txt\n", ""]
file_candidates = st.text(alphabet="adelt.-0_sfjonxpgTJ", max_size=16) | st.sampled_from(
    FILE_EDGES)


def _takes(rule: Callable[[str], object], name: str) -> bool:
    try:
        rule(name)
    except APIError:
        return False
    return True


def _owners_take(name: str) -> dict[str, bool]:
    config = Settings(_env_file=None)
    return {
        MODEL_FILE_RULE: _takes(lambda n: model_file_rule(n, config), name),
        DATASET_FILE_RULE: _takes(lambda n: dataset_file_rule(n, config), name),
        ADAPTER_FILE_RULE: any(_takes(lambda n, k=kind: adapter_file_rule(k, n, config), name)
                               for kind in AdapterKind),
    }


@settings(max_examples=300, deadline=None)
@given(file_candidates)
def test_file_patterns_match_the_upload_rules(name: str) -> None:
    for rule, taken in _owners_take(name).items():
        assert valid(rule, name) == taken, (rule, name)
