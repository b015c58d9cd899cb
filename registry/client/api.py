"""`DeltahubClient`: the HTTP API as methods, one per operation."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from registry.client.errors import ClientError
from registry.client.files import CHUNK_BYTES, Advance, holds, read_chunks, write_checked
from registry.client.partial import PartFile
from registry.client.retry import RetryPolicy
from registry.client.transport import BrokenStream, Transport, body_chunks

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_SECONDS = 60.0  # waiting for an answer; uploads and downloads have none
CONNECT_TIMEOUT_SECONDS = 10.0


def _seg(value: str | int) -> str:
    """One path segment: a name with `/` or `%` in it must not change the route."""
    return quote(str(value), safe="@:")


class DeltahubClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None,
                 http: httpx.Client | None = None,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 retry: RetryPolicy | None = None) -> None:
        timeout = httpx.Timeout(timeout_seconds, connect=min(timeout_seconds,
                                                             CONNECT_TIMEOUT_SECONDS))
        # Plain http needs no certificates: loading the CA bundle would add ~80 ms to every
        # command. Redirects are not followed, so a request never leaves for an https URL.
        tls = url.lower().startswith("https://")
        self.http = http or httpx.Client(base_url=url.rstrip("/"), timeout=timeout, verify=tls)
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.transport = Transport(self.http, retry or RetryPolicy())

    @classmethod
    def from_env(cls) -> DeltahubClient:
        timeout = float(os.environ.get("DELTAHUB_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS))
        return cls(os.environ.get("DELTAHUB_URL", DEFAULT_URL), os.environ.get("DELTAHUB_TOKEN"),
                   timeout_seconds=timeout)

    def close(self) -> None:
        self.http.close()

    # -- models -------------------------------------------------------------------------
    def create_model(self, name: str, base: str | None = None,
                     files: Mapping[str, str] | None = None,
                     quantized_from: str | None = None) -> dict[str, Any]:
        """A pending model: new (201), or this token's own draft to resume (200).

        `files` (filename -> sha256) declares what this push will upload, so that a
        re-run of the same push resumes the draft the first run left.
        """
        body: dict[str, Any] = {"name": name, "kind": "finetune" if base else "base",
                                "base": base}
        if files is not None:
            body["files"] = dict(files)
        if quantized_from is not None:  # a 4-bit base (older servers refuse the field)
            body["quantized_from"] = quantized_from
        return self.transport.json("POST", "/models", json=body)

    def finalize_model(self, name: str, files: Mapping[str, str] | None = None
                       ) -> dict[str, Any]:
        """`files` (filename -> sha256): refuse unless the draft holds exactly those."""
        return self.transport.json("POST", f"/models/{_seg(name)}/finalize",
                                   json={"files": dict(files)} if files is not None else None)

    def get_model(self, ref: str) -> dict[str, Any]:
        return self.transport.json("GET", f"/models/{_seg(ref)}")

    def list_models(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._pages("/models", filters)

    def delete_model(self, ref: str) -> None:
        self.transport.send("DELETE", f"/models/{_seg(ref)}")

    # -- data sets ----------------------------------------------------------------------
    def create_dataset(self, name: str, description: str | None = None,
                       files: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A draft: new (201), this token's own draft to resume (200), or the finalized
        data set itself (200) when `files` (filename -> sha256) are exactly its files."""
        body: dict[str, Any] = {"name": name}
        if description is not None:
            body["description"] = description
        if files is not None:
            body["files"] = dict(files)
        return self.transport.json("POST", "/datasets", json=body)

    def finalize_dataset(self, name: str, files: Mapping[str, str] | None = None
                         ) -> dict[str, Any]:
        """`files` (filename -> sha256): refuse unless the draft holds exactly those."""
        return self.transport.json("POST", f"/datasets/{_seg(name)}/finalize",
                                   json={"files": dict(files)} if files is not None else None)

    def get_dataset(self, name: str) -> dict[str, Any]:
        return self.transport.json("GET", f"/datasets/{_seg(name)}")

    def list_datasets(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._pages("/datasets", filters)

    def delete_dataset(self, name: str) -> None:
        self.transport.send("DELETE", f"/datasets/{_seg(name)}")

    # -- adapters -----------------------------------------------------------------------
    def create_adapter(self, name: str, base: str, kind: str, source: str | None = None,
                       files: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A draft: new (201), or this token's own draft of `name` to resume (200).

        `files` as for `create_model`.
        """
        body: dict[str, Any] = {"name": name, "base": base, "kind": kind}
        if source is not None:
            body["source"] = source
        if files is not None:
            body["files"] = dict(files)
        return self.transport.json("POST", "/adapters", json=body)

    def finalize_adapter(self, adapter_id: int, files: Mapping[str, str] | None = None
                         ) -> tuple[dict[str, Any], bool]:
        """The finalized adapter, and whether the push made a new version."""
        response = self.transport.send(
            "POST", f"/adapters/{adapter_id}/finalize",
            json={"files": dict(files)} if files is not None else None)
        result: dict[str, Any] = response.json()
        return result, response.status_code == httpx.codes.CREATED

    def get_adapter(self, ref: str) -> dict[str, Any]:
        return self.transport.json("GET", f"/adapters/{_seg(ref)}")

    def list_adapters(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._pages("/adapters", filters)

    def delete_adapter(self, ref: str | int) -> None:
        self.transport.send("DELETE", f"/adapters/{_seg(ref)}")

    def set_alias(self, ref: str, alias: str) -> dict[str, Any]:
        return self.transport.json("PUT", f"/adapters/{_seg(ref)}/aliases/{_seg(alias)}")

    def remove_alias(self, name: str, alias: str) -> None:
        self.transport.send("DELETE", f"/adapters/{_seg(name)}/aliases/{_seg(alias)}")

    # -- jobs ---------------------------------------------------------------------------
    def compress(self, model: str, method: str, options: dict[str, Any],
                 idempotency_key: str | None = None) -> dict[str, Any]:
        """Queue a compression of the fine-tune `model`; the job (queued, or the one an
        `idempotency_key` retry finds)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.transport.json("POST", f"/models/{_seg(model)}/compress",
                                   params={"method": method}, json=options, headers=headers)

    def get_job(self, job_id: int) -> dict[str, Any]:
        return self.transport.json("GET", f"/jobs/{job_id}")

    def list_jobs(self, **filters: Any) -> Iterator[dict[str, Any]]:
        return self._pages("/jobs", filters)

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self.transport.json("POST", f"/jobs/{job_id}/cancel")

    # -- events -------------------------------------------------------------------------
    def events(self, after: int = 0, *, types: list[str] | None = None,
               base: str | None = None, name: str | None = None, limit: int | None = None,
               wait_seconds: float = 0) -> dict[str, Any]:
        """One page of `GET /events` (`{"items", "cursor"}`), long-polling `wait_seconds`."""
        params: dict[str, Any] = {"after": after, "base": base, "name": name, "limit": limit,
                                  "types": ",".join(types) if types else None}
        if wait_seconds:
            params["wait"] = wait_seconds
        return self.transport.json(
            "GET", "/events", params={k: v for k, v in params.items() if v is not None},
            # The answer may take the whole wait: the usual timeout starts after it.
            timeout=self.http.timeout.read + wait_seconds if self.http.timeout.read else None)

    # -- webhooks (scope admin) ----------------------------------------------------------
    def create_webhook(self, url: str, events: list[str] | None = None,
                       filters: dict[str, str] | None = None) -> dict[str, Any]:
        """Subscribe `url`; the answer carries its `secret`, shown this once."""
        return self.transport.json("POST", "/webhooks", json={
            "url": url, "events": events or [], "filters": filters or {}})

    def list_webhooks(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.transport.json("GET", "/webhooks")["items"]
        return items

    def delete_webhook(self, webhook_id: int) -> None:
        self.transport.send("DELETE", f"/webhooks/{webhook_id}")

    def test_webhook(self, webhook_id: int) -> dict[str, Any]:
        return self.transport.json("POST", f"/webhooks/{webhook_id}/test")

    def webhook_deliveries(self, webhook_id: int, status: str | None = None, *,
                           event: int | None = None, outcome: str | None = None,
                           limit: int | None = None,
                           page_token: str | None = None) -> dict[str, Any]:
        """A page of the delivery log: {"items": attempts newest first, "next_page_token"}."""
        params = {k: v for k, v in (("status", status), ("event", event),
                                    ("outcome", outcome), ("limit", limit),
                                    ("page_token", page_token)) if v is not None}
        page: dict[str, Any] = self.transport.json(
            "GET", f"/webhooks/{webhook_id}/deliveries", params=params or None)
        return page

    # -- files --------------------------------------------------------------------------
    def upload(self, owner: str, path: Path, sha256: str,
               advance: Advance | None = None) -> dict[str, Any]:
        """PUT a file to `/models/<name>`, `/adapters/<id>` or `/datasets/<name>` (owner),
        streamed.

        Retried from its first byte when the connection breaks: the server keeps only a
        whole file whose sha256 matches, and a second PUT replaces the first.
        """
        headers = {"Content-Length": str(path.stat().st_size), "X-Content-SHA256": sha256,
                   "Content-Type": "application/octet-stream"}
        sent = _Tally(advance)

        def body() -> Iterator[bytes]:
            if sent.bytes and advance:
                advance(-sent.bytes)  # a retry sends the file again: take the first try back
            sent.bytes = 0
            return read_chunks(path, sent)

        return self.transport.json("PUT", f"{owner}/files/{_seg(path.name)}", body=body,
                                   headers=headers, timeout=None)

    def download(self, owner: str, filename: str, dest: Path, sha256: str,
                 advance: Advance | None = None, restart: Advance | None = None) -> bool:
        """GET a file into `dest`, checking its sha256; `dest` appears only when it is whole.

        A `dest` that already holds these bytes is kept: nothing is sent (False). The bytes
        collect in a part file beside `dest` (partial.py): a connection that breaks
        mid-file, or a run that is stopped, continues from where it was with `Range` and
        `If-Range`, so only the missing bytes travel. When the server sends the whole
        file instead (another version, or no range support) the part starts again and
        `restart` is told how many bytes were thrown away; `advance` is told of the bytes
        a part already held.
        """
        if holds(dest, sha256):
            return False
        path = f"{owner}/files/{_seg(filename)}"
        url = str(self.http.base_url.join(path))
        with PartFile.open(dest, sha256) as part:
            if part is None:  # another download of this file is under way: do without
                self._download_whole(path, dest, sha256, url, advance, restart)
                return True
            if part.size and advance:
                advance(part.size)
            for attempt in range(1, self.transport.retry.attempts + 1):
                try:
                    self._continue(part, path, sha256, advance, restart)
                    break
                except BrokenStream:
                    if attempt == self.transport.retry.attempts:
                        raise
                    self.transport.retry.wait(attempt)  # the part keeps what came
            part.finish(dest, sha256, url)
        return True

    def _continue(self, part: PartFile, path: str, sha256: str, advance: Advance | None,
                  restart: Advance | None) -> None:
        """Bring `part` to the end of the file: the missing bytes, or all of them."""
        if part.size and part.hexdigest() == sha256:
            return  # an earlier try got every byte and stopped before renaming
        headers = {"Range": f"bytes={part.size}-", "If-Range": f'"{sha256}"'} if part.size \
            else {}
        try:
            response = self.transport.open_stream(path, headers)
        except ClientError as exc:
            if exc.status != 416 or not part.size:
                raise
            # The part is as long as the file or longer, yet not it: start again.
            response = self._from_the_start(part, path, restart)
        if part.size and (response.status_code != 206 or _range_start(response) != part.size):
            # The whole file is coming (another version, or a server without ranges),
            # or a range other than the one asked for: take it all, from the start.
            if response.status_code == 206:
                response.close()
                response = self._from_the_start(part, path, restart)
            else:
                self._drop(part, restart)
        try:
            # As they arrive (no chunk size): a break keeps every byte that came.
            for chunk in body_chunks(response, None):
                part.write(chunk)
                if advance:
                    advance(len(chunk))
        finally:
            response.close()

    def _from_the_start(self, part: PartFile, path: str, restart: Advance | None
                        ) -> httpx.Response:
        self._drop(part, restart)
        return self.transport.open_stream(path)

    @staticmethod
    def _drop(part: PartFile, restart: Advance | None) -> None:
        dropped = part.restart()
        if dropped and restart:
            restart(dropped)

    def _download_whole(self, path: str, dest: Path, sha256: str, url: str,
                        advance: Advance | None, restart: Advance | None) -> None:
        """The file from its first byte, into a private temporary file (no resuming)."""
        for attempt in range(1, self.transport.retry.attempts + 1):
            moved = _Tally(advance)
            try:
                write_checked(dest, self.transport.stream_bytes(path, CHUNK_BYTES), sha256,
                              url, moved)
                return
            except BrokenStream:
                if attempt == self.transport.retry.attempts:
                    raise
                if restart:
                    restart(moved.bytes)
                self.transport.retry.wait(attempt)

    # -- plumbing -----------------------------------------------------------------------
    def _pages(self, path: str, filters: dict[str, Any]) -> Iterator[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        while True:
            page = self.transport.json("GET", path, params=params)
            yield from page["items"]
            if not page["next_page_token"]:
                return
            params["page_token"] = page["next_page_token"]


def _range_start(response: httpx.Response) -> int | None:
    """The first byte a 206 answer carries, from its `Content-Range: bytes a-b/size`."""
    unit, _, spec = response.headers.get("Content-Range", "").partition(" ")
    first = spec.partition("-")[0]
    return int(first) if unit.lower() == "bytes" and first.isdigit() else None


class _Tally:
    """Bytes moved by one try at a file, passed on to a progress bar as they move."""

    def __init__(self, advance: Advance | None) -> None:
        self.bytes = 0
        self.advance = advance

    def __call__(self, n: int) -> None:
        self.bytes += n
        if self.advance:
            self.advance(n)
