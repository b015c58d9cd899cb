"""SQL statements per request, counted in-process; run by benchmarks/api_bench.py.

It runs with the checkout under test first on PYTHONPATH (so an older checkout counts its
own statements) and DELTAHUB_DATABASE_URL / DELTAHUB_STORAGE_URL set to the benchmark's
database and blobs. It builds that checkout's app (registry/app.py `create_app`), sends
each request read as JSON from stdin (`[{"label", "path", "headers", "distinct"}]`) through
httpx.ASGITransport, once to warm caches and then COUNTED_RUNS times, and prints as JSON,
by label, the status and the fewest statements a run sent (a `before_cursor_execute`
listener on every SQLAlchemy engine).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine

COUNTED_RUNS = 3


async def count_statements(app: Any, requests: list[dict[str, Any]]) -> dict[str, Any]:
    counted = [0]

    def count(*_: object) -> None:
        counted[0] += 1

    event.listen(Engine, "before_cursor_execute", count)
    found: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for request in requests:
            await client.get(distinct(request, 0), headers=request["headers"])
            counts = []
            for run in range(1, COUNTED_RUNS + 1):
                counted[0] = 0
                response = await client.get(distinct(request, run), headers=request["headers"])
                counts.append(counted[0])
            # The fewest: a run that opened a pool connection also counts its set-up.
            found[request["label"]] = {"status": response.status_code,
                                       "statements": min(counts)}
    event.remove(Engine, "before_cursor_execute", count)
    return found


def distinct(request: dict[str, Any], run: int) -> str:
    """The request's path; for a `distinct` one, a query no earlier request asked (so no
    cached answer serves it)."""
    return f"{request['path']}&probe={run}" if request.get("distinct") else request["path"]


def main() -> None:
    from registry.app import create_app  # the checkout first on PYTHONPATH

    requests = json.load(sys.stdin)
    print(json.dumps(asyncio.run(count_statements(create_app(), requests))))


if __name__ == "__main__":
    main()
