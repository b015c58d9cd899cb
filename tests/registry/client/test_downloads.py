"""`DeltahubClient.download`: a file already there is not fetched, a part left by an
interrupted download continues with `Range` + `If-Range`, and the result is checked."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from registry.client import ChecksumMismatch, DeltahubClient, RetryPolicy
from registry.client.partial import PartFile, part_path
from tests.conftest import Tokens
from tests.registry.conftest import TinyModels
from tests.registry.downloads import push_one_of_each

# The server's side is tested on both databases (tests/registry/test_downloads.py).
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

URL = "/adapters/bot@1/files/adapter_model.safetensors"


class Seen:
    """(status, Range, If-Range) of every answer the client got."""

    def __init__(self, http: httpx.Client) -> None:
        self.answers: list[tuple[int, str | None, str | None]] = []
        http.event_hooks["response"].append(self)

    def __call__(self, response: httpx.Response) -> None:
        request = response.request
        self.answers.append((response.status_code, request.headers.get("range"),
                             request.headers.get("if-range")))


@pytest.fixture
def pushed(client: TestClient, tokens: Tokens, tiny_models: TinyModels,
           tmp_path: Path) -> bytes:
    return push_one_of_each(client, tokens.push, tiny_models, tmp_path / "pushed")[URL]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Where the client downloads to: nothing else in it."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def reader(client: TestClient, tokens: Tokens) -> tuple[DeltahubClient, Seen]:
    client.headers.update(tokens.read)
    return DeltahubClient(http=client), Seen(client)


def fetch(api: DeltahubClient, dest: Path, data: bytes,
          moved: list[int] | None = None) -> bool:
    sha = hashlib.sha256(data).hexdigest()
    note = moved.append if moved is not None else None
    return api.download("/adapters/bot@1", dest.name, dest, sha, note,
                        restart=(lambda n: moved.append(-n)) if moved is not None else None)


@on_sqlite
def test_a_file_already_there_is_not_fetched(client: TestClient, tokens: Tokens,
                                             pushed: bytes, out: Path) -> None:
    api, seen = reader(client, tokens)
    dest = out / "adapter_model.safetensors"
    dest.write_bytes(pushed)
    assert fetch(api, dest, pushed) is False
    assert seen.answers == []
    dest.write_bytes(pushed[:-1] + b"?")  # other bytes under the name: fetched
    assert fetch(api, dest, pushed) is True
    assert dest.read_bytes() == pushed
    assert seen.answers == [(200, None, None)]


@on_sqlite
def test_a_part_left_behind_continues_with_a_range(client: TestClient, tokens: Tokens,
                                                   pushed: bytes, out: Path) -> None:
    api, seen = reader(client, tokens)
    dest = out / "adapter_model.safetensors"
    sha = hashlib.sha256(pushed).hexdigest()
    part_path(dest, sha).write_bytes(pushed[:1000])  # what an interrupted pull left
    moved: list[int] = []
    assert fetch(api, dest, pushed, moved) is True
    assert dest.read_bytes() == pushed
    assert seen.answers == [(206, "bytes=1000-", f'"{sha}"')]
    assert moved[0] == 1000  # the bar counts the part once
    assert sum(moved) == len(pushed)
    assert [p.name for p in out.iterdir()] == [dest.name]  # the part became dest


@on_sqlite
def test_a_whole_part_is_finished_without_a_request(client: TestClient, tokens: Tokens,
                                                    pushed: bytes, out: Path) -> None:
    api, seen = reader(client, tokens)
    dest = out / "adapter_model.safetensors"
    part_path(dest, hashlib.sha256(pushed).hexdigest()).write_bytes(pushed)
    assert fetch(api, dest, pushed) is True
    assert dest.read_bytes() == pushed
    assert seen.answers == []


@on_sqlite
def test_a_part_longer_than_the_file_starts_again(client: TestClient, tokens: Tokens,
                                                  pushed: bytes, out: Path) -> None:
    api, seen = reader(client, tokens)
    dest = out / "adapter_model.safetensors"
    part_path(dest, hashlib.sha256(pushed).hexdigest()).write_bytes(pushed + b"extra")
    moved: list[int] = []
    assert fetch(api, dest, pushed, moved) is True
    assert dest.read_bytes() == pushed
    assert [status for status, _, _ in seen.answers] == [416, 200]
    assert sum(moved) == len(pushed)


@on_sqlite
def test_a_part_of_wrong_bytes_fails_the_check_and_is_dropped(client: TestClient,
                                                              tokens: Tokens, pushed: bytes,
                                                              out: Path) -> None:
    api, _ = reader(client, tokens)
    dest = out / "adapter_model.safetensors"
    part_path(dest, hashlib.sha256(pushed).hexdigest()).write_bytes(b"x" * 1000)
    with pytest.raises(ChecksumMismatch):
        fetch(api, dest, pushed)
    assert list(out.iterdir()) == []  # neither dest nor the bad part
    assert fetch(api, dest, pushed) is True  # so the next try starts clean
    assert dest.read_bytes() == pushed


class BreaksAfter(httpx.SyncByteStream):
    def __init__(self, first: bytes) -> None:
        self.first = first

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        raise httpx.ReadError("connection reset by peer")


def test_a_broken_connection_continues_from_the_last_byte(tmp_path: Path) -> None:
    whole = b"the first part, then the rest of the file"
    sha = hashlib.sha256(whole).hexdigest()
    asked: list[tuple[str | None, str | None]] = []

    def server(request: httpx.Request) -> httpx.Response:
        asked.append((request.headers.get("range"), request.headers.get("if-range")))
        if len(asked) == 1:
            return httpx.Response(200, stream=BreaksAfter(whole[:14]))
        return httpx.Response(206, content=whole[14:], headers={
            "Content-Range": f"bytes 14-{len(whole) - 1}/{len(whole)}"})

    waits: list[float] = []
    http = httpx.Client(base_url="http://registry.test", transport=httpx.MockTransport(server))
    api = DeltahubClient(http=http, retry=RetryPolicy(attempts=3, sleep=waits.append))
    dest = tmp_path / "adapter_model.safetensors"
    moved: list[int] = []
    api.download("/adapters/1", dest.name, dest, sha, moved.append,
                 restart=lambda n: moved.append(-n))
    assert dest.read_bytes() == whole
    assert asked == [(None, None), ("bytes=14-", f'"{sha}"')]
    assert moved == [14, len(whole) - 14]  # nothing thrown away, nothing sent twice
    assert len(waits) == 1


@on_sqlite
def test_a_download_of_a_file_another_is_downloading_does_without_the_part(
        client: TestClient, tokens: Tokens, pushed: bytes, out: Path) -> None:
    api, seen = reader(client, tokens)
    dest = out / "adapter_model.safetensors"
    sha = hashlib.sha256(pushed).hexdigest()
    with PartFile.open(dest, sha) as held:  # another download holds the part
        assert held is not None
        held.write(pushed[:10])
        assert fetch(api, dest, pushed) is True
    assert dest.read_bytes() == pushed
    assert seen.answers == [(200, None, None)]
