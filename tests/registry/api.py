"""Small drivers for the HTTP API, so each test reads as the scenario it checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response

from tests.finetune import FinetunePair


def register_model(client: TestClient, headers: dict[str, str], name: str, directory: Path,
                   kind: str = "base", base: str | None = None,
                   quantized_from: str | None = None) -> dict[str, Any]:
    final = upload_model(client, headers, name, directory, kind, base, quantized_from)
    assert final.status_code == 200, final.text
    result: dict[str, Any] = final.json()
    return result


def upload_model(client: TestClient, headers: dict[str, str], name: str, directory: Path,
                 kind: str = "base", base: str | None = None,
                 quantized_from: str | None = None) -> Response:
    """Create, upload every file of `directory`, finalize; returns the finalize response."""
    body: dict[str, Any] = {"name": name, "kind": kind}
    if base is not None:
        body["base"] = base
    if quantized_from is not None:
        body["quantized_from"] = quantized_from
    created = client.post("/models", json=body, headers=headers)
    assert created.status_code == 201, created.text
    for path in sorted(directory.iterdir()):
        if path.is_file():
            put = client.put(f"/models/{name}/files/{path.name}", content=path.read_bytes(),
                             headers=headers)
            assert put.status_code == 201, put.text
    return client.post(f"/models/{name}/finalize", headers=headers)


def push_adapter(client: TestClient, headers: dict[str, str], name: str, base: str,
                 directory: Path, kind: str = "lora") -> Response:
    """Create, upload every file of `directory`, finalize; returns the finalize response."""
    draft = client.post("/adapters", json={"name": name, "base": base, "kind": kind},
                        headers=headers)
    assert draft.status_code == 201, draft.text
    adapter_id = draft.json()["id"]
    for path in sorted(directory.iterdir()):
        if path.is_file():
            put = client.put(f"/adapters/{adapter_id}/files/{path.name}",
                             content=path.read_bytes(), headers=headers)
            assert put.status_code == 201, put.text
    return client.post(f"/adapters/{adapter_id}/finalize", headers=headers)


def push_dataset(client: TestClient, headers: dict[str, str], name: str, *files: Path,
                 description: str | None = None, finalize: bool = True) -> dict[str, Any]:
    """Create the data set, upload `files`, finalize (unless not asked); the last answer."""
    created = client.post("/datasets", json={"name": name, "description": description},
                          headers=headers)
    assert created.status_code == 201, created.text
    for path in files:
        put = client.put(f"/datasets/{name}/files/{path.name}", content=path.read_bytes(),
                         headers=headers)
        assert put.status_code == 201, put.text
    answer = created
    if finalize:
        answer = client.post(f"/datasets/{name}/finalize", headers=headers)
        assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def register_finetune_pair(client: TestClient, headers: dict[str, str], pair: FinetunePair,
                           base: str, finetune: str) -> None:
    """tests/finetune.py's real pair as `base` and `finetune` (with their tokenizer.json),
    and its data as data sets: py-train (token ids), py-heldout (text), prose-heldout
    (JSON lines)."""
    register_model(client, headers, base, pair.base)
    register_model(client, headers, finetune, pair.finetune, kind="finetune", base=base)
    push_dataset(client, headers, "py-train", pair.python.train)
    push_dataset(client, headers, "py-heldout", pair.python_text)
    push_dataset(client, headers, "prose-heldout", pair.prose_jsonl)
