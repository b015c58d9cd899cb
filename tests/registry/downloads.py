"""Files of each owner (model, adapter, data set) pushed over HTTP, and what every GET of
a stored file must answer to conditional and range headers (RFC 9110)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.testclient import TestClient

from tests.registry.api import push_adapter, push_dataset, register_model
from tests.registry.conftest import TinyModels

CORPUS = b"".join(f"line {i}: some words to calibrate on\n".encode() for i in range(40))


def push_one_of_each(client: TestClient, headers: dict[str, str], models: TinyModels,
                     tmp_path: Path) -> dict[str, bytes]:
    """A base model, a LoRA on it and a data set; a file of each: URL → its bytes."""
    register_model(client, headers, "tiny-base", models.base)
    assert push_adapter(client, headers, "bot", "tiny-base", models.lora).status_code == 201
    tmp_path.mkdir(parents=True, exist_ok=True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(CORPUS)
    push_dataset(client, headers, "calib", corpus)
    return {
        "/models/tiny-base/files/model.safetensors":
            (models.base / "model.safetensors").read_bytes(),
        "/adapters/bot@1/files/adapter_model.safetensors":
            (models.lora / "adapter_model.safetensors").read_bytes(),
        "/datasets/calib/files/corpus.txt": CORPUS,
    }


def check_conditional_and_ranged_gets(client: TestClient, headers: dict[str, str], url: str,
                                      data: bytes) -> None:
    size, etag = len(data), f'"{hashlib.sha256(data).hexdigest()}"'
    whole = client.get(url, headers=headers)
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["etag"] == etag
    assert whole.headers["accept-ranges"] == "bytes"

    for if_none_match in (etag, f'"{"0" * 64}", {etag}', "*", f"W/{etag}"):
        unchanged = client.get(url, headers={**headers, "If-None-Match": if_none_match})
        assert unchanged.status_code == 304, if_none_match
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == etag
    changed = client.get(url, headers={**headers, "If-None-Match": f'"{"0" * 64}"'})
    assert (changed.status_code, changed.content) == (200, data)

    for range_, first, end in (("bytes=0-9", 0, 10), (f"bytes={size - 5}-", size - 5, size),
                               ("bytes=-7", size - 7, size), (f"bytes=3-{size * 2}", 3, size)):
        part = client.get(url, headers={**headers, "Range": range_})
        assert part.status_code == 206, range_
        assert part.content == data[first:end], range_
        assert part.headers["content-range"] == f"bytes {first}-{end - 1}/{size}"
        assert part.headers["content-length"] == str(end - first)
        assert part.headers["etag"] == etag

    past = client.get(url, headers={**headers, "Range": f"bytes={size}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{size}"
    assert past.json()["error"] == "RangeNotSatisfiable"

    several = client.get(url, headers={**headers, "Range": "bytes=0-1,5-6"})
    assert (several.status_code, several.content) == (200, data)  # allowed: all of it

    same = client.get(url, headers={**headers, "Range": "bytes=10-", "If-Range": etag})
    assert (same.status_code, same.content) == (206, data[10:])
    other = client.get(url, headers={**headers, "Range": "bytes=10-",
                                     "If-Range": f'"{"0" * 64}"'})
    assert (other.status_code, other.content) == (200, data)
