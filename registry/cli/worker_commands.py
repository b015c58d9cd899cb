"""`deltahub worker`: run compression jobs from the shared database and object store."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Annotated

import typer

from registry.cli.console import console
from registry.cli.locate import migrated_engine
from registry.infra.database import Database
from registry.jobs.worker import Worker
from registry.settings import Settings
from registry.storage.factory import make_blob_store


def worker(
    name: Annotated[str | None, typer.Option(help="how this worker shows in job leases")]
    = None,
    cpu_only: Annotated[bool, typer.Option(
        help="never use a GPU, and leave jobs that require one to others")] = False,
) -> None:
    """Run compression jobs until interrupted.

    Start any number, on any machine: workers share only the database and the object
    store with the API (DELTAHUB_DATABASE_URL, DELTAHUB_STORAGE_URL).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    migrated_engine(settings).dispose()  # a clear line, not a worker failing on every claim
    database = Database.from_settings(settings)
    runner = Worker(database, make_blob_store(settings), settings, name=name,
                    capabilities=set() if cpu_only else None)

    def stop(signum: int, _frame: FrameType | None) -> None:
        # The job in flight ends at its next progress point only if cancelled; a stopped
        # worker's job is left to its lease and taken over by another worker.
        console.print(f"worker {runner.name}: stopping ({signal.Signals(signum).name})")
        runner.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.run()
    database.dispose()


def register(app: typer.Typer) -> None:
    app.command()(worker)
