"""A TCP relay in front of the S3 server that holds a worker's first commit (CopyObject).

A staged object exists from the moment its PUT is answered until the commit copies it to
its content address and deletes it. With tiny files that window lasts a millisecond, too
short to SIGKILL a worker inside it from outside. The relay widens it for as long as the
test likes: it forwards every byte both ways until a request carrying the
`x-amz-copy-source` header begins, then forwards nothing more of that connection and sets
`held`. The worker waits on its answer, its staged object in the bucket, until killed.

No HTTP is parsed, so nothing about botocore's framing (chunked bodies, keep-alive)
matters: the header name is looked for in the raw request bytes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from urllib.parse import urlsplit

_MARKER = b"x-amz-copy-source"
_CHUNK_BYTES = 64 * 1024
# Every blocking socket call ends within this, so no relay thread outlives a test by more.
_IO_TIMEOUT_SECONDS = 60.0
_ACCEPT_POLL_SECONDS = 0.2
_JOIN_SECONDS = 5.0


class S3Gate:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"not an http://host:port URL: {upstream_url!r}")
        self._upstream = (parts.hostname, parts.port)
        self.held = threading.Event()  # a commit request is being held
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_ACCEPT_POLL_SECONDS)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> S3Gate:
        self._spawn(self._accept)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._closing.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=_JOIN_SECONDS)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            client.settimeout(_IO_TIMEOUT_SECONDS)
            try:
                upstream = socket.create_connection(self._upstream,
                                                    timeout=_IO_TIMEOUT_SECONDS)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets += [client, upstream]
            self._spawn(self._requests, client, upstream)
            self._spawn(self._answers, upstream, client)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to S3, until the first commit request: that one is held."""
        tail = b""
        try:
            while chunk := client.recv(_CHUNK_BYTES):
                seen = (tail + chunk).lower()
                if not self.held.is_set() and _MARKER in seen:
                    self.held.set()
                    while client.recv(_CHUNK_BYTES):  # until the worker is gone
                        pass
                    return
                tail = seen[-len(_MARKER):]
                upstream.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while chunk := upstream.recv(_CHUNK_BYTES):
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the other side
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
