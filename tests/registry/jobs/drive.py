"""Drive a Worker in the test's own process: one job at a time, to the queue's end."""

from __future__ import annotations

from fastapi import FastAPI

from registry.jobs.worker import Worker


def worker(app: FastAPI) -> Worker:
    return Worker(app.state.database, app.state.store, app.state.settings, name="test-worker",
                  capabilities=set())


def run_all(app: FastAPI) -> int:
    """Run every job due; how many ran."""
    w, ran = worker(app), 0
    while w.run_once():
        ran += 1
    return ran
