"""The OpenAPI document, corrected to say what the API really does.

FastAPI builds the document from signatures, so it knows the paths, the parameters and
the success bodies, but not what the rest of the code enforces: one error body for every
failure (`ErrorOut`, written by registry/infra/error_handlers.py), bearer tokens with scopes
(`RequireScope`), uploads read raw from the request stream, the name rules of
registry/names.py and the page-size cap. Clients generated from the plain document get
all of that wrong. `install_openapi` rewrites the document once, deriving each fact from
the route or from the code that enforces it; what no signature shows (the conflicts a
service's state rules raise) is listed in `SERVICE_ERRORS`.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.routing import APIRoute, iter_route_contexts

from registry.adapters.schemas import AdapterCreate
from registry.auth.schemas import TokenCreate
from registry.auth.tokens import TOKEN_PREFIX, Scope
from registry.datasets.schemas import DatasetCreate
from registry.infra.deps import ReadAccess, RequireScope
from registry.infra.openapi_errors import NOT_FOUND, SERVICE_ERRORS
from registry.infra.openapi_rules import (
    ADAPTER_FILE_RULE,
    ADAPTER_REF_RULE,
    DATASET_FILE_RULE,
    FILENAME_RULE,
    MAX_LENGTHS,
    MODEL_FILE_RULE,
    MODEL_REF_RULE,
    NAME_RULE,
)
from registry.infra.pagination import CURSOR_PATTERN, MAX_PAGE_TOKEN_CHARS
from registry.infra.schemas import ErrorOut
from registry.models.schemas import FinalizeRequest, ModelCreate
from registry.names import MAX_SUGGESTIONS
from registry.settings import Settings

JsonObject = dict[str, Any]

BEARER_SCHEME = "bearerAuth"
_ERROR_REF = {"$ref": f"#/components/schemas/{ErrorOut.__name__}"}
_BINARY = {"type": "string", "format": "binary"}
_JSON = "application/json"
_OCTETS = "application/octet-stream"
_RETRY_AFTER = {"description": "seconds to wait before retrying", "required": True,
                "schema": {"type": "integer", "minimum": 0}}
# registry/uploads/flow.py's SHA256_HEADER, as README and downloads spell it.
SHA256_HEADER_NAME = "X-Content-SHA256"

# The file names an upload's owner takes, by the path's first segment (openapi_rules.py).
_UPLOAD_FILENAME_RULES = {"models": MODEL_FILE_RULE, "adapters": ADAPTER_FILE_RULE,
                          "datasets": DATASET_FILE_RULE}
# Names a push declares it will upload (registry/uploads/drafts.py), by the body's model.
_DECLARED_FILE_RULES = {ModelCreate.__name__: MODEL_FILE_RULE,
                        AdapterCreate.__name__: ADAPTER_FILE_RULE,
                        DatasetCreate.__name__: DATASET_FILE_RULE,
                        FinalizeRequest.__name__: FILENAME_RULE}  # either owner's files


# Which rule each parameter and JSON body field follows, by the name the code gives it.
_PARAMETER_RULES = {"model": MODEL_REF_RULE, "base": MODEL_REF_RULE, "ref": ADAPTER_REF_RULE,
                    "alias": NAME_RULE, "name": NAME_RULE, "filename": FILENAME_RULE}
# ModelCreate.base goes through check_name (no ids); AdapterCreate's models may be ids.
_BODY_FIELD_RULES: dict[str, dict[str, str]] = {
    ModelCreate.__name__: {"name": NAME_RULE, "base": NAME_RULE, "quantized_from": NAME_RULE},
    AdapterCreate.__name__: {"name": NAME_RULE, "base": MODEL_REF_RULE,
                             "source": MODEL_REF_RULE},
    TokenCreate.__name__: {"name": NAME_RULE},
    DatasetCreate.__name__: {"name": NAME_RULE},
}
_READYZ = "/readyz"  # public, and its 503 is its own report rather than an ErrorOut
_READINESS = {_JSON: {"schema": {
    "type": "object", "required": ["status", "checks"],
    "properties": {"status": {"type": "string", "enum": ["ok", "unavailable"]},
                   "checks": {"type": "object", "additionalProperties": {"type": "string"},
                              "description": "\"ok\", or \"error: ...\" saying what failed"}},
}}}


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the corrected document at /openapi.json (built on first use, then cached)."""

    def openapi() -> JsonObject:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_document(app: FastAPI, settings: Settings) -> JsonObject:
    document = get_openapi(title=app.title, version=app.version, summary=app.summary,
                           description=app.description, routes=app.routes,
                           tags=app.openapi_tags, servers=app.servers)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[ErrorOut.__name__] = _error_schema()
    components["securitySchemes"] = {BEARER_SCHEME: {
        "type": "http", "scheme": "bearer",
        "description": f"A deltahub token ({TOKEN_PREFIX}...): `Authorization: Bearer "
                       f"<token>`. Scopes: {', '.join(s.value for s in Scope)}; "
                       f"`{Scope.ADMIN}` implies every other."}}
    _constrain_body_fields(schemas)
    parameters = _parameter_schemas(settings)
    operation_ids = _unique_operation_ids(app)
    for facts, endpoint in _route_facts(app):
        operation = document["paths"][facts.path][facts.method]
        operation["operationId"] = operation_ids.get(endpoint, operation["operationId"])
        _describe_operation(operation, facts, settings, parameters)
    _drop_unused_schemas(document)
    # The pieces above are shared module constants: no caller may edit them through it.
    return copy.deepcopy(document)


@dataclass(frozen=True)
class RouteFacts:
    """What one operation's signature says about its requests, and so about its errors."""

    method: str  # lower case, as the document spells it
    path: str
    scope: Scope | None  # None: a public route
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    json_body: bool
    raw_body: bool  # the endpoint reads the request stream itself: a file upload
    file_download: bool


def _route_facts(app: FastAPI) -> Iterator[tuple[RouteFacts, str]]:
    """Each documented operation's facts, with its endpoint's name."""
    # iter_route_contexts sees through included routers, giving each route its full path.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        dependant: Dependant = route.dependant
        for method in sorted(route.methods or ()):
            yield RouteFacts(
                method=method.lower(), path=route.path_format or "", scope=_scope(dependant),
                path_params=tuple(p.name for p in dependant.path_params),
                query_params=tuple(p.name for p in dependant.query_params),
                json_body=route.body_field is not None,
                raw_body=(route.body_field is None and method in ("PUT", "POST")
                          and dependant.request_param_name is not None),
                file_download=route.endpoint is not None and _returns_file(route.endpoint),
            ), route.name or ""


def _scope(dependant: Dependant) -> Scope | None:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, RequireScope | ReadAccess):
            return dependency.call.scope
        if (inner := _scope(dependency)) is not None:
            return inner
    return None


def _returns_file(endpoint: Callable[..., Any]) -> bool:
    returned = inspect.signature(endpoint, eval_str=True).return_annotation
    return inspect.isclass(returned) and issubclass(returned, StreamingResponse | FileResponse)


def _unique_operation_ids(app: FastAPI) -> dict[str, str]:
    """The endpoint's own name as its operationId (what generated clients call methods)."""
    names = [endpoint for _, endpoint in _route_facts(app)]
    return {name: name for name in names if names.count(name) == 1}


def _describe_operation(operation: JsonObject, facts: RouteFacts, settings: Settings,
                        parameters: dict[str, JsonObject]) -> None:
    _describe_security(operation, facts.scope)
    if facts.raw_body:  # the file name an upload takes depends on its owner
        owner = facts.path.split("/")[1]
        parameters = {**parameters, "filename": _string(_UPLOAD_FILENAME_RULES[owner])}
    for parameter in operation.get("parameters", []):
        _constrain_parameter(parameter, parameters)
    responses = operation["responses"]
    if facts.raw_body:
        _describe_upload(operation, settings)
    if facts.file_download:
        responses["200"] = _download_response()
        responses.update(_partial_download_responses())
    elif facts.method == "get" and facts.scope is not None:
        _describe_conditional(responses)
    if facts.path == _READYZ:
        responses["200"] = {"description": "Ready", "content": _READINESS}
        responses["503"] = {"description": "Not ready: `checks` says which dependency failed",
                            "content": _READINESS, "headers": {"Retry-After": _RETRY_AFTER}}
    responses.pop("422", None)  # FastAPI's, with its own body shape: replaced below
    for code, description in sorted(_error_statuses(facts, settings).items()):
        responses[str(code)] = _error_response(code, description)
    _add_malformed_http(responses)


def _describe_conditional(responses: JsonObject) -> None:
    """JSON GETs are tagged and answer `If-None-Match` (registry/infra/conditional.py)."""
    responses["200"].setdefault("headers", {}).update({
        "ETag": {"description": "a strong tag of this answer: send it back as "
                                "`If-None-Match` to get a 304 while it is current",
                 "schema": {"type": "string"}},
        "Cache-Control": {"description": "`no-cache`: revalidate before every use",
                          "schema": {"type": "string"}}})
    responses["304"] = {"description": "Not Modified: the `If-None-Match` tag is the "
                                       "current one; no body",
                        "headers": {"ETag": {"schema": {"type": "string"}}}}


def _add_malformed_http(responses: JsonObject) -> None:
    """A request the HTTP server cannot parse (e.g. a non-numeric Content-Length) gets its
    plain-text 400 before the API sees it, on any route."""
    malformed = ("the HTTP request itself is malformed, answered by the HTTP server in "
                 "plain text.")
    response = responses.get("400")
    if response is None:
        response = responses["400"] = {"description": "The " + malformed.removeprefix("the "),
                                       "content": {}}
    else:
        response["description"] += " Or " + malformed
    response["content"]["text/plain"] = {"schema": {"type": "string"}}


def _describe_security(operation: JsonObject, scope: Scope | None) -> None:
    if scope is None:
        operation["security"] = []  # public: overrides any document-wide requirement
        return
    # OpenAPI 3.1 lets a bearer requirement name roles: the scope the token needs.
    operation["security"] = [{BEARER_SCHEME: [scope.value]}]
    operation["description"] = (
        f"{operation.get('description', '')}\n\nNeeds a token with the `{scope}` scope "
        f"(an `{Scope.ADMIN}` token has every scope).").lstrip()


def _error_statuses(facts: RouteFacts, settings: Settings) -> dict[int, str]:
    """Each error status the operation can answer with, and what it means there."""
    errors: dict[int, list[str]] = {}

    def add(status: int, text: str) -> None:
        errors.setdefault(status, []).append(text)

    if facts.scope is not None:
        add(401, "No token, a malformed `Authorization` header, or an unknown or revoked "
                 "token (`Unauthorized`).")
        add(403, f"The token lacks the `{facts.scope}` scope (`Forbidden`).")
    looked_up = [p for p in facts.path_params if p in NOT_FOUND
                 and not (facts.raw_body and p == "filename")]
    if looked_up:
        add(404, "Nothing of that name or id ("
                 + ", ".join(f"`{NOT_FOUND[p]}`" for p in looked_up) + ").")
    if facts.json_body:
        add(400, "The body is not UTF-8 text (`BadRequest`).")
        add(413, f"The body is over {settings.MAX_REQUEST_BYTES} bytes (`PayloadTooLarge`).")
    if facts.raw_body:
        _add_upload_errors(add, settings)
    if facts.path_params or facts.query_params or facts.json_body:
        add(422, "A parameter or field breaks its rule above: a name or file name "
                 "(`InvalidName`, `InvalidFilename`), a type or range (`ValidationError`)"
                 + (", a `page_token` from another query (`InvalidPageToken`)"
                    if "page_token" in facts.query_params else "") + ".")
    for status, text in SERVICE_ERRORS.get((facts.method, facts.path), {}).items():
        add(status, text)
    if facts.scope is not None:  # every such route reads the token from the database
        add(503, "The database is busy or down, or object storage failed "
                 "(`DatabaseBusy`, `DatabaseUnavailable`, `StorageUnavailable`); nothing "
                 "was changed. Retry after `Retry-After` seconds.")
    return {status: " ".join(texts) for status, texts in errors.items()}


def _add_upload_errors(add: Callable[[int, str], None], settings: Settings) -> None:
    add(408, f"No byte of the body arrived for {settings.UPLOAD_IDLE_TIMEOUT_SECONDS:g} s "
             "(`RequestTimeout`); nothing was stored.")
    add(409, "The model, adapter or data set is finalized; its files are immutable "
             "(`NotPending`).")
    add(413, f"The file is over its limit, declared or counted: {settings.MAX_UPLOAD_BYTES} "
             f"bytes for safetensors, {settings.MAX_JSON_BYTES} for other files, "
             f"{settings.MAX_DATASET_BYTES} for a data set's files (`PayloadTooLarge`).")
    add(415, "A pickle, by name or by content, never unpickled (`PickleRefused`), or a file "
             "this model, adapter or data set does not take (`UnsupportedFile`).")
    add(422, "The content is not what the file name says (`InvalidSafetensors`, "
             "`NonFiniteTensor`, `InvalidContent`, `InvalidDataset`), or does not hash to "
             f"`{SHA256_HEADER_NAME}` (`ChecksumMismatch`). Nothing was stored.")


def _error_response(status: int, description: str) -> JsonObject:
    response: JsonObject = {"description": description,
                            "content": {_JSON: {"schema": _ERROR_REF}}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": _RETRY_AFTER}
    return response


def _describe_upload(operation: JsonObject, settings: Settings) -> None:
    operation.setdefault("requestBody", {
        "required": True,
        "description": "The file's bytes, sent as they are (not multipart). Safetensors are "
                       f"checked while they stream, up to {settings.MAX_UPLOAD_BYTES} bytes; "
                       f"JSON and text files must be UTF-8, up to {settings.MAX_JSON_BYTES}.",
        "content": {_OCTETS: {"schema": _BINARY}},
    })
    header = {"name": SHA256_HEADER_NAME, "in": "header", "required": False,
              "description": "The sha256 of the body in hex: a body that hashes otherwise "
                             "is refused (422 `ChecksumMismatch`).",
              "schema": {"type": "string", "pattern": "^[0-9A-Fa-f]{64}$"}}
    operation.setdefault("parameters", []).append(header)


def _download_response() -> JsonObject:
    return {
        "description": "The file's bytes, as uploaded",
        "headers": {
            SHA256_HEADER_NAME: {"description": "sha256 of the body in hex", "required": True,
                                  "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
            "ETag": {"description": "the sha256, quoted", "required": True,
                     "schema": {"type": "string"}},
        },
        "content": {_OCTETS: {"schema": _BINARY}},
    }


def _partial_download_responses() -> JsonObject:
    """What `If-None-Match`, `Range` and `If-Range` bring (registry/infra/downloads.py)."""
    etag = {"description": "the sha256, quoted", "required": True,
            "schema": {"type": "string"}}
    return {
        "206": {"description": "The bytes one `Range` asked for (`If-Range`, if sent, "
                               "names this file's ETag); several ranges get a 200",
                "headers": {"Content-Range": {"required": True, "schema": {
                    "type": "string", "pattern": "^bytes [0-9]+-[0-9]+/[0-9]+$"}},
                            "ETag": etag},
                "content": {_OCTETS: {"schema": _BINARY}}},
        "304": {"description": "`If-None-Match` matches the ETag: the copy held is current",
                "headers": {"ETag": etag}},
        "416": {"description": "The `Range` starts past the end of the file; "
                               "`Content-Range: bytes */<size>` gives the size",
                "headers": {"Content-Range": {"required": True, "schema": {
                    "type": "string", "pattern": "^bytes \\*/[0-9]+$"}}},
                "content": {_JSON: {"schema": _ERROR_REF}}},
    }


def _parameter_schemas(settings: Settings) -> dict[str, JsonObject]:
    schemas = {name: _string(rule) for name, rule in _PARAMETER_RULES.items()}
    schemas["limit"] = {"type": "integer", "minimum": 1, "maximum": settings.MAX_PAGE_SIZE,
                        "default": settings.DEFAULT_PAGE_SIZE}
    schemas["wait"] = {"type": "number", "minimum": 0,
                       "maximum": settings.EVENTS_MAX_WAIT_SECONDS, "default": 0}
    schemas["page_token"] = {
        "type": "string", "pattern": f"^{CURSOR_PATTERN}$",
        "maxLength": MAX_PAGE_TOKEN_CHARS,
        "description": "the `next_page_token` of the previous page of the same query, "
                       "unchanged (one from another query is refused: `InvalidPageToken`)"}
    return schemas


def _string(rule: str) -> JsonObject:
    schema: JsonObject = {"type": "string", "pattern": rule}
    if (longest := MAX_LENGTHS.get(rule)) is not None:
        schema["maxLength"] = longest
    return schema


def _constrain_parameter(parameter: JsonObject, schemas: dict[str, JsonObject]) -> None:
    schema = parameter.get("schema", {})
    # An optional query parameter is absent, never null: a query string cannot say null.
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:
        schema = {**{k: v for k, v in schema.items() if k != "anyOf"}, **options[0]}
    if parameter["name"] in schemas:
        schema = {**schema, **schemas[parameter["name"]]}
    parameter["schema"] = schema


def _constrain_body_fields(schemas: JsonObject) -> None:
    for model, fields in _BODY_FIELD_RULES.items():
        properties = schemas[model]["properties"]
        for field, rule in fields.items():
            constraint = _string(rule)
            target = properties[field]
            # `str | None` fields: constrain the string branch, leave null allowed.
            branches = target.get("anyOf", [target])
            for branch in branches:
                if branch.get("type") == "string":
                    branch.update(constraint)
    # Declared and expected files (registry/uploads/drafts.py) are keyed by file name.
    for keyed, rule in _DECLARED_FILE_RULES.items():
        files = schemas[keyed]["properties"]["files"]
        for branch in files.get("anyOf", [files]):
            if branch.get("type") == "object":
                branch["propertyNames"] = _string(rule)
    scopes = schemas[TokenCreate.__name__]["properties"]["scopes"]
    scopes["items"] = {"type": "string", "enum": [s.value for s in Scope]}
    scopes["minItems"] = 1


def _error_schema() -> JsonObject:
    """ErrorOut, plus the close matches a 404 for an unknown name carries
    (registry/errors.py NotFound) when it has any."""
    schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schema["properties"]["did_you_mean"] = {
        "type": "array", "items": {"type": "string"}, "minItems": 1,
        "maxItems": MAX_SUGGESTIONS, "title": "Did You Mean",
        "description": "present when an unknown name looks like known ones: the closest, "
                       "best first"}
    return schema


def _drop_unused_schemas(document: JsonObject) -> None:
    """Remove FastAPI's validation-error shapes once nothing refers to them."""
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):  # the first refers to the second
        if f'"#/components/schemas/{name}"' not in json.dumps(document):
            schemas.pop(name, None)
