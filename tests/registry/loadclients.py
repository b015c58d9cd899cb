"""Load-test clients shared by the load tests (tests/registry/test_load.py and
test_serve_workers.py): a recorder of every answer and what broke the rules, the shape
of an honest 503, and the seed every load test reads."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.registry.api import push_adapter, register_model
from tests.registry.conftest import TinyModels
from tests.registry.serverproc import ServerProcess

# A request still unanswered after this long counts as a hang. The server's own bounds
# (queue and lock timeouts, 10 s and 5 s by default) end any wait well before it.
REQUEST_TIMEOUT_SECONDS = 30.0
BASE = "llama-tiny"
SEEDS = ("seed-0", "seed-1", "seed-2")


@dataclass
class Recorder:
    """Every answer of the load phase, and everything that broke the rules."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    problems: list[str] = field(default_factory=list)

    async def call(self, client: httpx.AsyncClient, kind: str, expected: set[int],
                   method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        """Send one request; None if it failed at the transport (recorded as a problem)."""
        start = time.monotonic()
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            self.problems.append(f"{kind} {method} {url}: no answer within "
                                 f"{REQUEST_TIMEOUT_SECONDS:.0f} s (hang)")
            return None
        except httpx.TransportError as exc:
            self.problems.append(f"{kind} {method} {url}: {type(exc).__name__}: {exc}")
            return None
        self.latencies[kind].append(time.monotonic() - start)
        self.statuses[kind][response.status_code] += 1
        if response.status_code == 503:
            if (shape := refusal_problem(response)) is not None:
                self.problems.append(f"{kind} {method} {url}: {shape}")
        elif response.status_code not in expected:
            self.problems.append(f"{kind} {method} {url}: {response.status_code} "
                                 f"{response.text[:300]!r}")
        return response


def refusal_problem(response: httpx.Response) -> str | None:
    """What is wrong with a 503, if anything: it must be JSON {error, detail} + Retry-After."""
    problems = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if not (isinstance(body, dict) and isinstance(body.get("error"), str)
            and isinstance(body.get("detail"), str)):
        problems.append(f"body is not JSON {{error, detail}}: {response.text[:300]!r}")
    retry_after = response.headers.get("Retry-After", "")
    if not retry_after.isdigit():
        problems.append(f"Retry-After is {retry_after!r}, not a number of seconds")
    return f"503 {'; '.join(problems)}" if problems else None


def seed(server: ServerProcess, token: str, tiny_models: TinyModels) -> list[int]:
    """A finalized base and three finalized adapters, pushed over HTTP; the adapter ids."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            register_model(client, headers, BASE, tiny_models.base)  # type: ignore[arg-type]
            ids = []
            for name in SEEDS:
                final = push_adapter(client, headers, name, BASE,  # type: ignore[arg-type]
                                     tiny_models.lora)
                assert final.status_code == 201, final.text
                ids.append(final.json()["id"])
            alias = client.put("/adapters/seed-0/aliases/prod", headers=headers)
            assert alias.status_code == 200, alias.text
    except AssertionError as exc:
        raise AssertionError(f"seeding failed: {exc}\n--- server log tail ---\n"
                             f"{server.log_tail()}") from exc
    return ids
