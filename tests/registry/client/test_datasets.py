"""`DeltahubClient` and `Push` for data sets, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from registry.client import ClientError, DeltahubClient, Push, sha256_of
from tests.conftest import LiveServer, Tokens
from tests.registry.datasets.helpers import KINDS, count_rows

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    paths = []
    for name, data in sorted(KINDS.items()):
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    return paths


def _connect(server: LiveServer, headers: dict[str, str]) -> DeltahubClient:
    return DeltahubClient(server.url, headers["Authorization"].split()[1])


@pytest.fixture
def client(live_server: LiveServer, tokens: Tokens) -> Iterator[DeltahubClient]:
    client = _connect(live_server, tokens.admin)  # push and read, as a CI job's token
    yield client
    client.close()


def _push(client: DeltahubClient, paths: list[Path], said: list[str] | None = None
          ) -> tuple[dict[str, object], bool]:
    push = Push(client, paths, {p.name: sha256_of(p) for p in paths},
                say=said.append if said is not None else lambda _: None)
    return push.dataset("calib", "calibration text")


def test_push_then_push_again(client: DeltahubClient, files: list[Path],
                              engine: Engine) -> None:
    dataset, created = _push(client, files)
    assert created
    assert dataset["status"] == "ready"
    assert dataset["description"] == "calibration text"
    rows = count_rows(engine)
    again, created = _push(client, files)
    assert not created
    assert again == dataset
    assert count_rows(engine) == rows
    assert client.get_dataset("calib") == dataset


def test_an_interrupted_push_resumes(client: DeltahubClient, files: list[Path]) -> None:
    digests = {p.name: sha256_of(p) for p in files}
    client.create_dataset("calib", files=digests)
    client.upload("/datasets/calib", files[0], digests[files[0].name])  # then it broke
    said: list[str] = []
    dataset, created = _push(client, files, said)
    assert created
    assert said == [f"resuming: 1 of {len(files)} files already uploaded"]
    assert [f["filename"] for f in dataset["files"]] == [p.name for p in files]


def test_list_follows_pages_and_delete(client: DeltahubClient, tmp_path: Path,
                                       live_server: LiveServer, tokens: Tokens) -> None:
    for i in range(3):
        path = tmp_path / f"set-{i}.txt"
        path.write_text(f"text {i}")
        Push(client, [path], {path.name: sha256_of(path)}).dataset(f"set-{i}")
    names = [d["name"] for d in client.list_datasets(limit=2)]
    assert names == ["set-2", "set-1", "set-0"]
    pusher = _connect(live_server, tokens.push)
    try:
        with pytest.raises(ClientError) as refused:
            pusher.delete_dataset("set-0")  # finalized: admin only
    finally:
        pusher.close()
    assert (refused.value.status, refused.value.error) == (403, "Forbidden")
    assert "finalized" in refused.value.detail
    client.delete_dataset("set-0")
    assert [d["name"] for d in client.list_datasets(status="ready")] == ["set-2", "set-1"]


def test_a_refused_file_is_a_client_error_naming_it(client: DeltahubClient,
                                                    tmp_path: Path) -> None:
    bad = tmp_path / "corpus.txt"
    bad.write_bytes(b"caf\xe9")
    with pytest.raises(ClientError) as refused:
        Push(client, [bad], {bad.name: sha256_of(bad)}).dataset("bad")
    assert (refused.value.status, refused.value.error) == (422, "InvalidDataset")
    assert "corpus.txt is not UTF-8" in refused.value.detail
