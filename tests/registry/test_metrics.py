"""`/metrics`: Prometheus text that parses, counters that move, one registry per app."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from registry.app import create_app
from registry.jobs.worker import Worker
from registry.settings import Settings
from registry.storage.base import StorageError
from registry.storage.local import LocalBlobStore
from tests.conftest import Tokens
from tests.models import make_finetune
from tests.registry.api import register_model
from tests.registry.ui.conftest import BASE, FINETUNE, write_tiny_llama

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass(frozen=True)
class Tiny:
    base: Path
    finetune: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("metrics-models")
    base = write_tiny_llama(root / "base")
    return Tiny(base, make_finetune(base, root / "finetune"))


def scrape(client: TestClient, headers: dict[str, str]) -> dict[tuple[str, frozenset[
        tuple[str, str]]], float]:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_need_a_read_token_unless_public(client: TestClient, tokens: Tokens,
                                                 settings: Settings,
                                                 store: LocalBlobStore) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=tokens.push).status_code == 403
    assert client.get("/metrics", headers=tokens.read).status_code == 200
    public = create_app(settings.model_copy(update={"METRICS_PUBLIC": True}), store=store)
    try:
        with TestClient(public) as other:
            assert other.get("/metrics").status_code == 200
    finally:
        public.state.database.dispose()
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_request_counters_use_route_templates(client: TestClient, tokens: Tokens) -> None:
    before = scrape(client, tokens.read)
    for name in ("a-model", "another-model", "third"):
        assert client.get(f"/models/{name}", headers=tokens.read).status_code == 404
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client, tokens.read)
    labels = {"method": "GET", "route": "/models/{model}", "status": "404"}
    assert value(after, "deltahub_http_requests_total", **labels) - value(
        before, "deltahub_http_requests_total", **labels) == 3
    timing = {"method": "GET", "route": "/models/{model}"}
    assert value(after, "deltahub_http_request_duration_seconds_count", **timing) == 3
    assert value(after, "deltahub_http_requests_total", method="GET", route="<unmatched>",
                 status="404") == 1
    # No raw path became a label.
    assert not any(("route", "/models/a-model") in labels for _, labels in after)


def test_uploads_count_bytes_and_failures_by_error(client: TestClient, tokens: Tokens,
                                                  tiny: Tiny) -> None:
    register_model(client, tokens.push, BASE, tiny.base)
    sent = sum(p.stat().st_size for p in tiny.base.iterdir() if p.is_file())
    refused = client.put("/models/no-such/files/config.json", content=b"{}",
                         headers=tokens.push)
    assert refused.status_code == 404
    pickle = client.post("/models", json={"name": "pickled", "kind": "base"},
                         headers=tokens.push)
    assert pickle.status_code == 201
    bad = client.put("/models/pickled/files/pytorch_model.bin", content=b"\x80\x04",
                     headers=tokens.push)
    assert bad.status_code >= 400
    samples = scrape(client, tokens.read)
    assert value(samples, "deltahub_upload_bytes_total") == sent
    assert value(samples, "deltahub_upload_failures_total", error="ModelNotFound") == 1
    assert value(samples, "deltahub_upload_failures_total", error=bad.json()["error"]) == 1


def test_job_gauges_and_durations_follow_the_queue(app: FastAPI, client: TestClient,
                                                   tokens: Tokens, tiny: Tiny) -> None:
    register_model(client, tokens.push, BASE, tiny.base)
    register_model(client, tokens.push, FINETUNE, tiny.finetune, kind="finetune",
                   base=BASE)
    for _ in range(2):
        started = client.post(f"/models/{FINETUNE}/compress?method=bitdelta",
                              headers=tokens.compress)
        assert started.status_code == 202
    queued = scrape(client, tokens.read)
    assert value(queued, "deltahub_jobs", status="queued") == 2
    assert value(queued, "deltahub_job_duration_seconds_count", method="bitdelta") == 0
    client.post(f"/jobs/{started.json()['id']}/cancel", headers=tokens.compress)
    worker = Worker(app.state.database, app.state.store, app.state.settings, name="metrics",
                    capabilities=set())
    while worker.run_once():
        pass
    done = scrape(client, tokens.read)
    assert value(done, "deltahub_jobs", status="queued") == 0
    assert value(done, "deltahub_jobs", status="succeeded") == 1
    assert value(done, "deltahub_jobs", status="cancelled") == 1
    assert value(done, "deltahub_job_duration_seconds_count", method="bitdelta") == 1
    assert value(done, "deltahub_job_duration_seconds_bucket", method="bitdelta",
                 le="+Inf") == 1
    assert value(done, "deltahub_job_duration_seconds_sum", method="bitdelta") > 0


@pytest.fixture
def second_app(settings: Settings, store: LocalBlobStore) -> Iterator[FastAPI]:
    other = create_app(settings, store=store)
    yield other
    other.state.database.dispose()


def test_each_app_counts_apart(client: TestClient, tokens: Tokens,
                               second_app: FastAPI) -> None:
    with TestClient(second_app) as other:
        for _ in range(3):
            other.get("/healthz")
        theirs = scrape(other, tokens.read)
    ours = scrape(client, tokens.read)
    health = {"method": "GET", "route": "/healthz", "status": "200"}
    assert value(theirs, "deltahub_http_requests_total", **health) == 3
    assert value(ours, "deltahub_http_requests_total", **health) == 0


class UnreachableStore(LocalBlobStore):
    """A store whose reads fail as an unreachable S3 does."""

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        raise StorageError("the object store did not answer")


def test_storage_errors_are_counted_by_route(client: TestClient, tokens: Tokens, tiny: Tiny,
                                             settings: Settings, tmp_path: Path) -> None:
    register_model(client, tokens.push, BASE, tiny.base)
    broken = create_app(settings, store=UnreachableStore(tmp_path / "blobs"))
    try:
        with TestClient(broken) as other:
            answer = other.get(f"/models/{BASE}/files/config.json", headers=tokens.read)
            assert answer.status_code == 503
            samples = scrape(other, tokens.read)
    finally:
        broken.state.database.dispose()
    assert value(samples, "deltahub_storage_errors_total",
                 route="/models/{model}/files/{filename:path}") == 1


def _series(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> int:
    return sum(1 for name, _ in samples if name.startswith("deltahub_http_"))


@pytest.mark.slow
def test_made_up_methods_and_paths_add_no_series(client: TestClient, tokens: Tokens) -> None:
    rng = random.Random(22)

    def hostile(count: int) -> None:
        for _ in range(count):
            method = "M" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=8))
            path = "/" + "".join(rng.choices(string.ascii_lowercase, k=12))
            assert client.request(method, "/healthz").status_code == 405
            assert client.request(rng.choice(["GET", method]), path).status_code in (404, 405)

    hostile(50)
    scrape(client, tokens.read)  # the scrape's own series show from the next one on
    warmed = _series(scrape(client, tokens.read))
    hostile(1000)  # 2,000 requests, each with a method and a path never seen before
    samples = scrape(client, tokens.read)
    assert _series(samples) == warmed  # nothing grew with the client's inventions
    methods = {dict(labels).get("method") for name, labels in samples
               if name == "deltahub_http_requests_total"}
    assert methods <= {"GET", "other"}
    assert value(samples, "deltahub_http_requests_total", method="other", route="/healthz",
                 status="405") == 1050
    assert value(samples, "deltahub_http_requests_total", method="GET", route="<unmatched>",
                 status="404") > 0
