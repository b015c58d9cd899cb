"""The engine's HTTP API over real sockets, with adapters pulled from a live registry."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from compress.lora import extract_lora
from registry.client import DeltahubClient
from registry.serving.engine.app import create_app
from registry.serving.engine.auth import RegistryTokens
from registry.serving.engine.engine import Engine, EngineLimits
from registry.serving.engine.scheduler import Generation, Sampling
from registry.serving.engine.sources import RegistryAdapters, pull_base
from tests.conftest import LiveServer, Tokens
from tests.registry.api import push_adapter, register_model
from tests.registry.serving.engine.helpers import (
    EngineModels,
    greedy_reference,
    running,
)

BASE = "tiny-base"
NEW_TOKENS = 32


@dataclass(frozen=True)
class Served:
    url: str
    headers: dict[str, str]
    engine: Engine


@pytest.fixture
def registry_url(client: TestClient, tokens: Tokens, live_server: LiveServer,
                 engine_models: EngineModels) -> str:
    """The registry holding the base and the four tenants' deltas (tenant-0…3, version 1)."""
    register_model(client, tokens.push, BASE, engine_models.base)
    for tenant in engine_models.tenants:
        response = push_adapter(client, tokens.push, tenant.name, BASE, tenant.delta,
                                kind="bitdelta")
        assert response.status_code == 201, response.text
    return live_server.url


EngineFactory = Callable[..., AbstractContextManager[Served]]


@pytest.fixture
def serve(registry_url: str, tokens: Tokens, tmp_path: Path) -> EngineFactory:
    """Start an engine on the registry's base (pulled into a cache), with these limits."""
    @contextmanager
    def start(**limits: Any) -> Iterator[Served]:
        token = tokens.read["Authorization"].removeprefix("Bearer ")
        client = DeltahubClient(registry_url, token)
        cache = tmp_path / "engine-cache"
        engine = Engine(pull_base(client, BASE, cache), BASE,
                        RegistryAdapters(client, cache, BASE), EngineLimits(**limits))
        with running(create_app(engine, RegistryTokens(registry_url))) as url:
            yield Served(url, tokens.read, engine)
        client.close()

    return start


def _completion(model: str, prompt: list[int] | str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0,
            "ignore_eos": True, **extra}


def _events(response: httpx.Response) -> list[Any]:
    lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


@pytest.mark.slow
def test_concurrent_requests_equal_merged_finetunes(serve: EngineFactory,
                                                    engine_models: EngineModels) -> None:
    prompts = {t.name: [40 + i, 50, 60, 70 + i] for i, t in enumerate(engine_models.tenants)}
    prompts[BASE] = [33, 34, 35]
    with serve() as served:
        async def ask_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=served.url, headers=served.headers,
                                         timeout=120) as http:
                return list(await asyncio.gather(*(
                    http.post("/v1/completions", json=_completion(model, prompt))
                    for model, prompt in prompts.items())))

        answers = asyncio.run(ask_all())
        assert served.engine.scheduler.steps < len(prompts) * NEW_TOKENS  # shared steps
    references = {t.name: t.merged for t in engine_models.tenants} | {BASE: engine_models.base}
    for (model, prompt), answer in zip(prompts.items(), answers, strict=True):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == (BASE if model == BASE else f"{model}@1")
        choice = body["choices"][0]
        assert choice["token_ids"] == greedy_reference(references[model], prompt, NEW_TOKENS)
        assert choice["finish_reason"] == "length"
        assert body["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": NEW_TOKENS,
                                 "total_tokens": len(prompt) + NEW_TOKENS}


def test_streamed_chat_equals_the_whole_answer_and_the_merged_model(
        serve: EngineFactory, engine_models: EngineModels) -> None:
    from transformers import AutoTokenizer

    tenant = engine_models.tenants[1]
    body = {"model": tenant.name, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    with serve() as served, httpx.Client(base_url=served.url, headers=served.headers,
                                         timeout=60) as http:
        whole = http.post("/v1/chat/completions", json=body)
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as sse:
            assert sse.status_code == 200
            assert sse.headers["content-type"].startswith("text/event-stream")
            chunks = _events(sse)
    assert whole.status_code == 200, whole.text
    choice = whole.json()["choices"][0]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [t for c in chunks for t in c["choices"][0]["token_ids"]] == choice["token_ids"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == \
        choice["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    tokenizer = AutoTokenizer.from_pretrained(engine_models.base)
    prompt = tokenizer.encode("<user>hi\n<assistant>", add_special_tokens=False)
    assert choice["token_ids"] == greedy_reference(tenant.merged, prompt, 12)
    assert choice["message"]["content"] == tokenizer.decode(choice["token_ids"],
                                                            skip_special_tokens=True)


def test_text_prompt_is_tokenized_and_streamed(serve: EngineFactory) -> None:
    with serve() as served, httpx.Client(base_url=served.url, headers=served.headers,
                                         timeout=60) as http:
        by_ids = http.post("/v1/completions", json=_completion(BASE, list(b"abc")))
        with http.stream("POST", "/v1/completions",
                         json=_completion(BASE, "abc", stream=True)) as sse:
            chunks = _events(sse)
    streamed = [t for c in chunks for t in c["choices"][0]["token_ids"]]
    assert streamed == by_ids.json()["choices"][0]["token_ids"]


def test_unknown_model_is_404_and_models_lists_base_and_adapters(
        serve: EngineFactory) -> None:
    with serve() as served, httpx.Client(base_url=served.url, headers=served.headers,
                                         timeout=60) as http:
        missing = http.post("/v1/completions", json=_completion("no-such-ft", [1, 2]))
        listed = http.get("/v1/models")
    assert missing.status_code == 404
    assert missing.json()["error"] == "ModelNotFound"
    assert served.engine.store.resident() == []
    assert listed.status_code == 200
    assert sorted(m["id"] for m in listed.json()["data"]) == [
        "tenant-0@1", "tenant-1@1", "tenant-2@1", "tenant-3@1", BASE]


@pytest.mark.slow
def test_lora_adapter_is_refused_with_422(serve: EngineFactory, client: TestClient,
                                         tokens: Tokens, engine_models: EngineModels,
                                         tmp_path: Path) -> None:
    lora = tmp_path / "lora"
    extract_lora(engine_models.base, engine_models.tenants[0].finetune, lora, rank=2)
    pushed = push_adapter(client, tokens.push, "ft-lora", BASE, lora, kind="lora")
    assert pushed.status_code == 201, pushed.text
    with serve() as served, httpx.Client(base_url=served.url, headers=served.headers,
                                         timeout=60) as http:
        refused = http.post("/v1/completions", json=_completion("ft-lora", [1, 2]))
        listed = http.get("/v1/models").json()["data"]
    assert refused.status_code == 422
    assert refused.json()["error"] == "UnsupportedAdapter"
    assert served.engine.store.resident() == []
    assert "ft-lora@1" not in [m["id"] for m in listed]


def test_bad_requests_are_refused_before_any_tenant_loads(serve: EngineFactory) -> None:
    refusals = [
        (_completion("tenant-0", [1] * 100, max_tokens=29), 400, "ContextTooLong"),  # 129 > 128
        (_completion("tenant-0", [1, 256]), 400, "InvalidGenerationRequest"),  # vocab is 256
        (_completion("tenant-0", []), 400, "InvalidGenerationRequest"),
        (_completion("tenant-0", [1], n=2), 422, "ValidationError"),
        (_completion("tenant-0", [1], temperature=-1), 422, "ValidationError"),
        (_completion("tenant-0", [1], seed=10**400), 422, "ValidationError"),
        (_completion("tenant-0", [1], seed=-1), 422, "ValidationError"),
    ]
    with serve() as served, httpx.Client(base_url=served.url, headers=served.headers,
                                         timeout=60) as http:
        for body, status, error in refusals:
            response = http.post("/v1/completions", json=body)
            assert (response.status_code, response.json()["error"]) == (status, error), body
        fits = http.post("/v1/completions", json=_completion(BASE, [1] * 100, max_tokens=28))
    assert fits.status_code == 200
    assert served.engine.store.resident() == []
    assert served.engine.scheduler.tokens_generated == 28


def test_requests_need_a_registry_token(serve: EngineFactory) -> None:
    with serve() as served, httpx.Client(base_url=served.url, timeout=60) as http:
        anonymous = http.post("/v1/completions", json=_completion(BASE, [1, 2]))
        forged = http.get("/v1/models", headers={"Authorization": "Bearer dh_not_a_token"})
    for response in (anonymous, forged):
        assert response.status_code == 401
        assert response.json()["error"] == "Unauthorized"
    assert served.engine.scheduler.tokens_generated == 0


def test_metrics_count_requests_tokens_and_tenants(serve: EngineFactory) -> None:
    with serve() as served, httpx.Client(base_url=served.url, headers=served.headers,
                                         timeout=60) as http:
        http.post("/v1/completions", json=_completion("tenant-0", [5, 6], max_tokens=3))
        http.post("/v1/completions", json=_completion("nope", [5, 6]))
        text = http.get("/metrics").text
    assert 'deltahub_engine_requests_total{route="/v1/completions",status="200"} 1.0' in text
    assert 'deltahub_engine_requests_total{route="/v1/completions",status="404"} 1.0' in text
    assert "deltahub_engine_generated_tokens_total 3.0" in text
    assert "deltahub_engine_resident_tenants 1.0" in text
    assert "deltahub_engine_tenant_loads_total 1.0" in text


def test_full_queue_is_refused_with_503(serve: EngineFactory, registry_url: str,
                                        tokens: Tokens) -> None:
    with serve(max_waiting=1) as served:
        engine = served.engine
        engine.scheduler.stop()  # nothing leaves the queue from now on
        parked = Generation(engine.store.acquire(BASE), [1], Sampling(max_tokens=1),
                            asyncio.new_event_loop())
        engine.scheduler.submit(parked)
        with httpx.Client(base_url=served.url, headers=served.headers, timeout=60) as http:
            refused = http.post("/v1/completions", json=_completion("tenant-0", [1, 2]))
    assert refused.status_code == 503
    assert refused.json()["error"] == "EngineOverloaded"
    assert engine.store.resident() == []  # refused before any tenant was loaded


def test_client_that_disconnects_cancels_its_generation(serve: EngineFactory) -> None:
    with serve() as served, httpx.Client(base_url=served.url, headers=served.headers,
                                         timeout=60) as http:
        scheduler = served.engine.scheduler
        body = _completion("tenant-2", [7, 8], max_tokens=100, stream=True)
        with http.stream("POST", "/v1/completions", json=body) as sse:
            next(sse.iter_lines())  # one token arrived; then hang up
        deadline = time.monotonic() + 60
        while scheduler.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scheduler.running == []
        assert scheduler.tokens_generated < 100
        assert served.engine.store.resident()[0].leases == 0  # evictable again
