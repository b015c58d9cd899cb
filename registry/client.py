"""A small HTTP client for deltahub's API: what the CLI and CI scripts use."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK_BYTES = 1024 * 1024

Advance = Callable[[int], None]  # called with the number of bytes just moved


class ClientError(Exception):
    """The server refused a request; carries its error name and detail."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


def sha256_of(path: Path, advance: Advance | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            if advance:
                advance(len(chunk))
    return digest.hexdigest()


class DeltahubClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None,
                 http: httpx.Client | None = None, timeout_seconds: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http or httpx.Client(base_url=url.rstrip("/"), timeout=timeout_seconds)
        self.http.headers.update(headers)

    @classmethod
    def from_env(cls) -> DeltahubClient:
        return cls(os.environ.get("DELTAHUB_URL", DEFAULT_URL), os.environ.get("DELTAHUB_TOKEN"))

    def close(self) -> None:
        self.http.close()

    # -- models -------------------------------------------------------------------------
    def create_model(self, name: str, base: str | None = None) -> dict[str, Any]:
        body = {"name": name, "kind": "finetune" if base else "base", "base": base}
        return self._json("POST", "/models", json=body)

    def finalize_model(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/models/{name}/finalize")

    def list_models(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._pages("/models", filters)

    # -- adapters -----------------------------------------------------------------------
    def create_adapter(self, name: str, base: str, kind: str) -> dict[str, Any]:
        return self._json("POST", "/adapters", json={"name": name, "base": base, "kind": kind})

    def finalize_adapter(self, adapter_id: int) -> tuple[dict[str, Any], bool]:
        """The finalized adapter, and whether the push made a new version."""
        response = self.http.post(f"/adapters/{adapter_id}/finalize")
        body = self._checked(response)
        return body, response.status_code == 201

    def get_adapter(self, ref: str) -> dict[str, Any]:
        return self._json("GET", f"/adapters/{ref}")

    def list_adapters(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._pages("/adapters", filters)

    def set_alias(self, ref: str, alias: str) -> dict[str, Any]:
        return self._json("PUT", f"/adapters/{ref}/aliases/{alias}")

    # -- jobs ---------------------------------------------------------------------------
    def compress(self, model: str, method: str, options: dict[str, Any],
                 idempotency_key: str | None = None) -> dict[str, Any]:
        """Queue a compression of the fine-tune `model`; the job (queued, or the one an
        `idempotency_key` retry finds)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", f"/models/{model}/compress", params={"method": method},
                          json=options, headers=headers)

    def get_job(self, job_id: int) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{job_id}")

    def list_jobs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._pages("/jobs", filters)

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/cancel")

    # -- files --------------------------------------------------------------------------
    def upload(self, owner: str, path: Path, sha256: str,
               advance: Advance | None = None) -> dict[str, Any]:
        """PUT a file to `/models/<name>` or `/adapters/<id>` (owner), streamed."""
        size = path.stat().st_size

        def body() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    yield chunk
                    if advance:
                        advance(len(chunk))

        headers = {"Content-Length": str(size), "X-Content-SHA256": sha256,
                   "Content-Type": "application/octet-stream"}
        return self._json("PUT", f"{owner}/files/{path.name}", content=body(), headers=headers,
                          timeout=None)

    def download(self, owner: str, filename: str, dest: Path, sha256: str,
                 advance: Advance | None = None) -> None:
        """GET a file into `dest`, checking its sha256; `dest` appears only when it is whole."""
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, self.http.stream(
                    "GET", f"{owner}/files/{filename}", timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    self._checked(response)
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    if advance:
                        advance(len(chunk))
            if digest.hexdigest() != sha256:
                raise ClientError(0, "ChecksumMismatch",
                                  f"{filename} arrived with sha256 {digest.hexdigest()}, "
                                  f"expected {sha256}; pull again")
            shutil.move(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)

    # -- plumbing -----------------------------------------------------------------------
    def _pages(self, path: str, filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        while True:
            page = self._json("GET", path, params=params)
            yield from page["items"]
            if not page["next_page_token"]:
                return
            params["page_token"] = page["next_page_token"]

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._checked(self.http.request(method, path, **kwargs))

    @staticmethod
    def _checked(response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                body = response.json()
                raise ClientError(response.status_code, body.get("error", "HTTPError"),
                                  body.get("detail", response.text))
            except ValueError:
                raise ClientError(response.status_code, "HTTPError", response.text) from None
        result: dict[str, Any] = response.json()
        return result
