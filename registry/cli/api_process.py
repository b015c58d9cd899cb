"""One API server process: the app behind uvicorn, stopped gracefully by SIGTERM or SIGINT.

Used by `deltahub serve` as it is (one process, on its own socket) and by each API process
of `deltahub serve --workers N` (on the supervisor's shared socket; registry/cli/supervisor.py).

On the first SIGTERM or SIGINT the process stops accepting connections, answers the event
feed's long-polls at once, lets requests in flight finish for up to
SHUTDOWN_TIMEOUT_SECONDS, then cancels what is left (an upload cut so removes its
staging object: registry/uploads/receive.py), runs the app's shutdown and exits 0. A second
SIGINT (Ctrl-C twice) stops at once.
"""

from __future__ import annotations

import signal
import socket
from types import FrameType

from registry.infra.session_key import shared_session_secret
from registry.settings import Settings


def process_settings(settings: Settings, *, embedded_workers: bool) -> Settings:
    """The settings one process runs with: the shared session key, and whether it runs jobs."""
    update: dict[str, object] = {"SESSION_SECRET": shared_session_secret(settings)}
    if not embedded_workers:
        update["EMBEDDED_WORKERS"] = 0
    return settings.model_copy(update=update)


def run_api(settings: Settings, host: str, port: int,
            sockets: list[socket.socket] | None = None) -> None:
    """Serve until stopped (on `sockets` if given, else bound to host:port)."""
    # Here, not at the top: `token` and `gc` need neither the web stack nor the app.
    import uvicorn

    from registry.app import create_app

    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level="info",
        timeout_keep_alive=settings.KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=settings.SHUTDOWN_TIMEOUT_SECONDS))

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        # uvicorn's own handler also records the signal and raises it again once the
        # server has stopped, so a SIGTERM would end the process with status 143 after a
        # clean shutdown; a stop we asked for is a success (0).
        if server.should_exit and sig == signal.SIGINT:
            server.force_exit = True
        server.should_exit = True
        # uvicorn waits for requests in flight before the lifespan's shutdown: answer
        # the feed's long-polls first, or a stop would wait out their `wait`.
        app.state.event_feed.close()

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    server.run(sockets=sockets)
