"""Identical pushes of one model or data set at once, by one token (a CI matrix): every
one succeeds, answered with the one finalized object.

Before issue 22, a push still uploading when another identical push finalized the
draft was answered 409 `NotPending`. Now an upload of bytes the finalized object holds
under that name already is answered 200 (nothing stored again); other bytes stay 409.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.conftest import LiveServer, Tokens
from tests.registry.conftest import TinyModels
from tests.registry.datasets.helpers import KINDS, count_rows

RACERS = 4
ROUNDS = 6
SHA256 = "X-Content-SHA256"


def _files(route: str, tiny_models: TinyModels) -> dict[str, bytes]:
    if route == "datasets":
        return KINDS
    return {p.name: p.read_bytes() for p in sorted(tiny_models.base.iterdir())}


def _send(http: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
    """One request, repeated while the server says it is busy (SQLite's one writer)."""
    for _ in range(20):
        response = http.request(method, url, **kwargs)  # type: ignore[arg-type]
        if response.status_code != 503:
            return response
    return response


def _push(server: LiveServer, auth: dict[str, str], route: str, name: str,
          files: dict[str, bytes], barrier: Barrier) -> list[httpx.Response]:
    """A whole push over HTTP: start declaring the files, upload each, finalize."""
    declared = {f: hashlib.sha256(data).hexdigest() for f, data in files.items()}
    start = {"name": name, "files": declared, **({"kind": "base"} if route == "models" else {})}
    with httpx.Client(base_url=server.url, headers=auth, timeout=60) as http:
        barrier.wait()
        answers = [_send(http, "POST", f"/{route}", json=start)]
        for filename, data in files.items():
            answers.append(_send(http, "PUT", f"/{route}/{name}/files/{filename}",
                                 content=data, headers={SHA256: declared[filename]}))
        answers.append(_send(http, "POST", f"/{route}/{name}/finalize",
                             json={"files": declared}))
        return answers


@pytest.mark.slow
@pytest.mark.parametrize("route", ["datasets", "models"])
def test_identical_concurrent_pushes_all_succeed(live_server: LiveServer, tokens: Tokens,
                                                 tiny_models: TinyModels, route: str) -> None:
    files = _files(route, tiny_models)
    for round_ in range(ROUNDS):
        name = f"same-{round_}"
        barrier = Barrier(RACERS)
        with ThreadPoolExecutor(RACERS) as pool:
            runs = [pool.submit(_push, live_server, tokens.push, route, name, files, barrier)
                    for _ in range(RACERS)]
            pushes = [run.result() for run in runs]
        for answers in pushes:
            codes = [a.status_code for a in answers]
            assert all(code in (200, 201) for code in codes), [a.text for a in answers]
        finals = [answers[-1].json() for answers in pushes]
        assert {(f["id"], f["status"]) for f in finals} == {(finals[0]["id"], "ready")}
        held = {f["filename"]: f["sha256"] for f in finals[0]["files"]}
        assert held == {f: hashlib.sha256(data).hexdigest() for f, data in files.items()}


@pytest.fixture
def finalized(client: TestClient, tokens: Tokens) -> dict[str, str]:
    """A finalized data set `calib` holding corpus.txt; its files, declared."""
    declared = {"corpus.txt": hashlib.sha256(KINDS["corpus.txt"]).hexdigest()}
    assert client.post("/datasets", json={"name": "calib", "files": declared},
                       headers=tokens.push).status_code == 201
    assert client.put("/datasets/calib/files/corpus.txt", content=KINDS["corpus.txt"],
                      headers=tokens.push).status_code == 201
    assert client.post("/datasets/calib/finalize", headers=tokens.push).status_code == 200
    return declared


def test_an_upload_of_what_a_finalized_data_set_holds_is_answered_as_done(
        client: TestClient, tokens: Tokens, engine: Engine,
        finalized: dict[str, str]) -> None:
    rows = count_rows(engine)
    again = client.put("/datasets/calib/files/corpus.txt", content=KINDS["corpus.txt"],
                       headers={**tokens.push, SHA256: finalized["corpus.txt"]})
    assert again.status_code == 200, again.text
    assert again.json() == {"filename": "corpus.txt", "sha256": finalized["corpus.txt"],
                            "size": len(KINDS["corpus.txt"])}
    assert count_rows(engine) == rows


@pytest.mark.parametrize(("filename", "data"), [
    ("corpus.txt", b"other text"),  # other bytes under its name
    ("docs.jsonl", KINDS["docs.jsonl"]),  # a file it does not hold
])
def test_other_bytes_for_a_finalized_data_set_are_still_refused(
        client: TestClient, tokens: Tokens, engine: Engine, finalized: dict[str, str],
        filename: str, data: bytes) -> None:
    rows = count_rows(engine)
    for header in ({SHA256: hashlib.sha256(data).hexdigest()}, {}):
        refused = client.put(f"/datasets/calib/files/{filename}", content=data,
                             headers={**tokens.push, **header})
        assert (refused.status_code, refused.json()["error"]) == (409, "NotPending")
    assert count_rows(engine) == rows


def test_a_draft_finalized_while_its_file_streams_answers_the_upload_as_done(
        live_server: LiveServer, tokens: Tokens, engine: Engine, tmp_path: Path) -> None:
    """The other timing: the finalize lands between the upload's start and its record."""
    text = KINDS["corpus.txt"]
    with httpx.Client(base_url=live_server.url, headers=tokens.push, timeout=60) as http:
        assert http.post("/datasets", json={"name": "calib"}).status_code == 201
        assert http.put("/datasets/calib/files/corpus.txt", content=text).status_code == 201
        rows = count_rows(engine)

        def body() -> Iterator[bytes]:
            yield text[:10]
            # The server holds this upload open; another run of the push finalizes.
            with httpx.Client(base_url=live_server.url, headers=tokens.push) as other:
                assert other.post("/datasets/calib/finalize").status_code == 200
            yield text[10:]

        again = http.put("/datasets/calib/files/corpus.txt", content=body(),
                         headers={"Content-Length": str(len(text))})
        assert again.status_code == 200, again.text
        assert again.json()["sha256"] == hashlib.sha256(text).hexdigest()
        assert count_rows(engine) == rows
        shown = http.get("/datasets/calib", headers=tokens.read).json()
        assert shown["status"] == "ready"
