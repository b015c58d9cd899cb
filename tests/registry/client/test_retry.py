"""Which failed requests the client tries again, how long it waits, and what it raises."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from registry.client import (
    ChecksumMismatch,
    ClientError,
    DeltahubClient,
    RetryPolicy,
    ServerUnreachable,
)
from registry.client.retry import retry_after_seconds

Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """A fake server answering from a list, one answer (or exception) per request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()  # an upload's body is consumed, as a server would
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client_for(script: Script, waits: list[float], attempts: int = 4) -> DeltahubClient:
    http = httpx.Client(base_url="http://registry.test", transport=httpx.MockTransport(script))
    return DeltahubClient(http=http, retry=RetryPolicy(attempts=attempts, sleep=waits.append))


def ok(body: object = None) -> httpx.Response:
    return httpx.Response(200, json=body if body is not None else {"id": 1})


def busy(status: int = 503, retry_after: str | None = "3") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, headers=headers,
                          json={"error": "DatabaseBusy", "detail": "try again"})


def test_503_is_retried_after_the_servers_retry_after() -> None:
    waits: list[float] = []
    script = Script(busy(retry_after="3"), busy(retry_after="1"), ok({"id": 7}))
    assert client_for(script, waits).get_adapter("bot") == {"id": 7}
    assert waits == [3.0, 1.0]
    assert len(script.requests) == 3


def test_a_post_is_retried_on_503_but_not_on_502() -> None:
    # 503: the server did nothing. 502: a proxy cannot say whether the server acted.
    waits: list[float] = []
    script = Script(busy(503), ok())
    client_for(script, waits).cancel_job(1)
    assert len(script.requests) == 2
    script = Script(busy(502, retry_after=None))
    with pytest.raises(ClientError) as raised:
        client_for(script, waits).cancel_job(1)
    assert raised.value.status == 502
    assert len(script.requests) == 1


def test_a_get_is_retried_on_502_and_504_with_growing_waits() -> None:
    waits: list[float] = []
    script = Script(busy(502, None), busy(504, None), busy(502, None), ok({"id": 2}))
    assert client_for(script, waits).get_job(2) == {"id": 2}
    assert len(waits) == 3
    assert waits[0] < waits[2]  # 0.25·(½..1), then 1·(½..1): backoff, even with jitter
    assert all(w <= 1.0 for w in waits)


def test_connection_reset_is_retried_for_an_upload_with_its_whole_body(
        tmp_path: Path) -> None:
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(b"x" * 3_000_000)  # three chunks
    waits: list[float] = []
    script = Script(httpx.ReadError("connection reset by peer"),
                    ok({"filename": path.name, "sha256": "s", "size": 3_000_000}))
    moved: list[int] = []
    client_for(script, waits).upload("/adapters/1", path, "s", moved.append)
    assert [len(r.content) for r in script.requests] == [3_000_000, 3_000_000]
    assert sum(moved) == 3_000_000  # the progress bar ends at the file's size
    assert -3_000_000 in moved
    assert script.requests[1].headers["X-Content-SHA256"] == "s"


def test_a_broken_connection_is_not_retried_for_a_post_without_idempotency_key() -> None:
    waits: list[float] = []
    script = Script(httpx.RemoteProtocolError("server disconnected"))
    with pytest.raises(ServerUnreachable) as raised:
        client_for(script, waits).finalize_adapter(3)
    assert raised.value.url == "http://registry.test/adapters/3/finalize"
    assert "broke" in raised.value.reason
    assert waits == []
    script = Script(httpx.RemoteProtocolError("server disconnected"), ok({"id": 9}))
    assert client_for(script, waits).compress("ft", "lora", {}, idempotency_key="k")["id"] == 9
    assert len(script.requests) == 2


def test_connection_refused_is_retried_for_any_method_then_reported() -> None:
    waits: list[float] = []
    script = Script(*[httpx.ConnectError("[Errno 111] Connection refused")] * 3)
    with pytest.raises(ServerUnreachable) as raised:
        client_for(script, waits, attempts=3).create_adapter("bot", "base", "lora")
    assert raised.value.method == "POST"
    assert raised.value.reason.startswith("cannot connect")
    assert len(script.requests) == 3
    assert len(waits) == 2


def test_timeouts_are_reported_not_retried() -> None:
    waits: list[float] = []
    script = Script(httpx.ReadTimeout("timed out"))
    with pytest.raises(ServerUnreachable) as raised:
        client_for(script, waits).get_adapter("bot")
    assert raised.value.timed_out
    assert waits == []


def test_a_refusal_carries_the_servers_error_and_suggestions() -> None:
    script = Script(httpx.Response(404, json={
        "error": "ModelNotFound", "detail": "no model 'tiny-lama'",
        "did_you_mean": ["tiny-llama"]}))
    with pytest.raises(ClientError) as raised:
        list(client_for(script, []).list_adapters(base="tiny-lama"))
    error = raised.value
    assert (error.status, error.error, error.did_you_mean) == (404, "ModelNotFound",
                                                               ("tiny-llama",))
    assert error.url == "http://registry.test/adapters?base=tiny-lama"
    assert error.method == "GET"


def test_an_answer_that_is_not_json_says_so() -> None:
    script = Script(httpx.Response(502, text="<html>Bad Gateway</html>"),
                    httpx.Response(200, text="<html>a login page</html>"))
    client = client_for(script, [], attempts=1)
    with pytest.raises(ClientError) as raised:
        client.get_job(1)
    assert (raised.value.status, raised.value.detail) == (502, "<html>Bad Gateway</html>")
    with pytest.raises(ClientError) as raised:
        client.get_job(1)
    assert raised.value.error == "InvalidResponse"


def test_retry_after_as_an_http_date() -> None:
    response = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after_seconds(response) == 0.0  # in the past: come back now
    assert retry_after_seconds(httpx.Response(503, headers={"Retry-After": "soon"})) is None


def test_a_long_retry_after_is_capped() -> None:
    waits: list[float] = []
    script = Script(busy(retry_after="3600"), ok())
    client = DeltahubClient(http=httpx.Client(base_url="http://registry.test",
                                              transport=httpx.MockTransport(script)),
                            retry=RetryPolicy(max_wait_seconds=5, sleep=waits.append))
    client.get_adapter("bot")
    assert waits == [5]


class BreaksAfterFirstChunk(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"half of it"
        raise httpx.ReadError("connection reset by peer")


def test_a_download_that_breaks_starts_that_file_again(tmp_path: Path) -> None:
    whole = b"half of it, and the rest"
    sha = hashlib.sha256(whole).hexdigest()
    waits: list[float] = []
    script = Script(httpx.Response(200, stream=BreaksAfterFirstChunk()),
                    httpx.Response(200, content=whole))
    dest = tmp_path / "adapter_model.safetensors"
    moved: list[int] = []
    client_for(script, waits).download("/adapters/1", dest.name, dest, sha, moved.append,
                                       restart=lambda n: moved.append(-n))
    assert dest.read_bytes() == whole
    assert sum(moved) == len(whole)  # the thrown-away bytes were taken back off the bar
    assert len(waits) == 1
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]  # no temporary file left


def test_a_download_with_the_wrong_checksum_leaves_nothing(tmp_path: Path) -> None:
    script = Script(httpx.Response(200, content=b"tampered"))
    dest = tmp_path / "adapter_config.json"
    with pytest.raises(ChecksumMismatch):
        client_for(script, []).download("/adapters/1", dest.name, dest, "0" * 64)
    assert list(tmp_path.iterdir()) == []
