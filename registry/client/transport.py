"""One HTTP request to the server: sent, retried when that is safe, and checked.

Every failure leaves here as `ClientError` (the server answered with an error) or
`ServerUnreachable` (no answer), naming the method and URL; httpx's own exceptions do
not escape.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from registry.client.errors import ClientError, ServerUnreachable
from registry.client.retry import BROKEN_ERRORS, RetryPolicy, retry_after_seconds


class BrokenStream(ServerUnreachable):
    """The connection broke in the middle of a response body (the request may be repeated)."""


Body = Callable[[], Iterable[bytes]]  # makes the body afresh for each try


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({text})"
    return f"the connection broke ({text})"


# How many GET answers a client keeps to revalidate: a poller asks for a few URLs again
# and again (a listing, an alias); a long-lived one must not grow without bound.
_VALIDATED_ANSWERS = 64


class Transport:
    def __init__(self, http: httpx.Client, retry: RetryPolicy) -> None:
        self.http = http
        self.retry = retry
        # URL -> (ETag, the JSON it tagged): a GET asked again sends `If-None-Match`, and
        # a 304 (a token check's cost on the server, no body) returns the kept answer.
        self._validated: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()

    def send(self, method: str, path: str, *, body: Body | None = None, stream: bool = False,
             **kwargs: Any) -> httpx.Response:
        """The server's answer (below 400), after any retries the policy allows."""
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.retry.attempts
            request = self.http.build_request(method, path, content=body() if body else None,
                                              **kwargs)
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                raise ServerUnreachable(method, str(request.url), _timeout_reason(exc),
                                        timed_out=True) from exc
            except httpx.TransportError as exc:
                if not last and self.retry.should_retry_error(request, exc):
                    self.retry.wait(attempt)
                    continue
                raise ServerUnreachable(method, str(request.url), _reason(exc)) from exc
            if not last and self.retry.should_retry_status(request, response.status_code):
                response.close()
                self.retry.wait(attempt, retry_after_seconds(response))
                continue
            if response.status_code >= 400:
                self._read_error_body(response, request)
                raise refusal(response)
            return response

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method != "GET":
            return self._parsed(self.send(method, path, **kwargs), method)
        key = str(self.http.build_request(method, path, params=kwargs.get("params")).url)
        kept = self._validated.get(key)
        if kept is not None:
            kwargs["headers"] = {**kwargs.get("headers", {}), "If-None-Match": kept[0]}
        response = self.send(method, path, **kwargs)
        if response.status_code == 304 and kept is not None:
            self._validated.move_to_end(key)
            return copy.deepcopy(kept[1])  # callers may change what they get
        result = self._parsed(response, method)
        etag = response.headers.get("etag")
        if etag:
            self._validated[key] = (etag, copy.deepcopy(result))
            self._validated.move_to_end(key)
            while len(self._validated) > _VALIDATED_ANSWERS:
                self._validated.popitem(last=False)
        return result

    @staticmethod
    def _parsed(response: httpx.Response, method: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = response.json()
        except ValueError as exc:
            raise ClientError(response.status_code, "InvalidResponse",
                              f"the server's answer is not JSON: {response.text[:200]!r}; is "
                              "the URL a deltahub server?", method=method,
                              url=str(response.request.url)) from exc
        return result

    def stream_bytes(self, path: str, chunk_bytes: int) -> Iterator[bytes]:
        """A GET's body, chunk by chunk; a stream that breaks raises `BrokenStream`."""
        response = self.open_stream(path)
        try:
            yield from body_chunks(response, chunk_bytes)
        finally:
            response.close()

    def open_stream(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """A GET's answer (below 400) with its body still to read: close it when done."""
        return self.send("GET", path, stream=True, timeout=None, headers=headers)

    def _read_error_body(self, response: httpx.Response, request: httpx.Request) -> None:
        try:
            response.read()
        except httpx.TransportError as exc:
            raise ServerUnreachable(request.method, str(request.url), _reason(exc)) from exc


def body_chunks(response: httpx.Response, chunk_bytes: int | None) -> Iterator[bytes]:
    """An open answer's body, chunk by chunk (of `chunk_bytes`, or as they arrive); a
    stream that breaks raises `BrokenStream`."""
    try:
        yield from response.iter_bytes(chunk_bytes)
    except BROKEN_ERRORS as exc:
        raise BrokenStream("GET", str(response.request.url), _reason(exc)) from exc
    except httpx.TimeoutException as exc:
        raise ServerUnreachable("GET", str(response.request.url), _timeout_reason(exc),
                                timed_out=True) from exc


def _timeout_reason(exc: httpx.TimeoutException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "no connection within the timeout"
    return "no answer within the timeout"


def refusal(response: httpx.Response) -> ClientError:
    """The server's JSON error (`{"error", "detail", "did_you_mean"?}`) as a ClientError."""
    request = response.request
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        return ClientError(response.status_code, response.reason_phrase or "HTTPError",
                           text or "(no detail)", method=request.method, url=str(request.url))
    suggestions = body.get("did_you_mean") or ()
    return ClientError(response.status_code, str(body.get("error", "HTTPError")),
                       str(body.get("detail", "")), method=request.method,
                       url=str(request.url),
                       did_you_mean=[str(s) for s in suggestions] if isinstance(
                           suggestions, list) else ())
