"""The engine against merged fine-tunes: a mixed batch decodes what each model alone would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from registry.serving.engine.engine import Engine, EngineLimits
from registry.serving.engine.errors import TenantCapacityExhausted
from registry.serving.engine.scheduler import Finished, Generation, Sampling
from registry.serving.engine.sources import LocalAdapters
from tests.registry.serving.engine.helpers import EngineModels, greedy_reference

NEW_TOKENS = 32
BASE = "tiny-base"


def _engine(models: EngineModels, **limits: int) -> Engine:
    source = LocalAdapters({t.name: t.delta for t in models.tenants})
    return Engine(models.base, BASE, source, EngineLimits(**limits))


async def _drain(generation: Generation) -> list[int]:
    return [e async for e in generation.tokens() if not isinstance(e, Finished)]


def _prompt(i: int) -> list[int]:
    return [72 + i, 101, 108, 108, 111, 32 + i]


@pytest.mark.slow
def test_mixed_batch_equals_each_merged_finetune(engine_models: EngineModels) -> None:
    """Four tenants and two base-only requests, two of them joining a batch already running:
    greedy tokens equal transformers' on each tenant's merged model."""
    engine = _engine(engine_models)
    greedy = Sampling(max_tokens=NEW_TOKENS, temperature=0)
    names = [t.name for t in engine_models.tenants] + [BASE, BASE]

    async def run() -> list[list[int]]:
        engine.start()
        try:
            first = [await engine.generate(n, _prompt(i), greedy)
                     for i, n in enumerate(names[:4])]
            while engine.scheduler.steps < 2:  # the batch is running: the others join it
                await asyncio.sleep(0.01)
            later = [await engine.generate(n, _prompt(i + 4), greedy)
                     for i, n in enumerate(names[4:])]
            return list(await asyncio.gather(*(_drain(g) for g in first + later)))
        finally:
            engine.stop()

    got = asyncio.run(run())
    # each tenant's own lm_head, embeddings and norms (stored whole) served its rows
    assert set(engine.model.linears["lm_head"].overrides) == {1, 2, 3, 4}
    assert set(engine.model.embedding.overrides) == {1, 2, 3, 4}
    assert engine.scheduler.steps < len(names) * NEW_TOKENS  # requests shared steps
    references = [t.merged for t in engine_models.tenants] + [engine_models.base] * 2
    for i, (tokens, reference) in enumerate(zip(got, references, strict=True)):
        assert len(tokens) == NEW_TOKENS
        assert tokens == greedy_reference(reference, _prompt(i), NEW_TOKENS), names[i]
    base_on_tenant_prompts = [greedy_reference(engine_models.base, _prompt(i), NEW_TOKENS)
                              for i in range(4)]
    assert all(a != b for a, b in zip(got[:4], base_on_tenant_prompts, strict=True))


def test_least_recently_used_idle_tenant_is_evicted(engine_models: EngineModels) -> None:
    engine = _engine(engine_models, max_tenants=2)
    store = engine.store
    first, second, third = (t.name for t in engine_models.tenants[:3])
    for name in (first, second):
        store.release(store.acquire(name))
    store.release(store.acquire(first))  # now `second` is the least recently used
    store.release(store.acquire(third))
    assert [t.adapter.key for t in store.resident()] == [first, third]
    assert store.stats.evictions == 1
    assert engine.model.linears["model.layers.0.mlp.up_proj"].with_bits == {1, 2}
    assert engine.model.linears["lm_head"].stack is None  # no tenant compresses it


def test_tenant_in_use_is_never_evicted(engine_models: EngineModels) -> None:
    engine = _engine(engine_models, max_tenants=1)
    held = engine.store.acquire(engine_models.tenants[0].name)
    with pytest.raises(TenantCapacityExhausted):
        engine.store.acquire(engine_models.tenants[1].name)
    assert [t.adapter.key for t in engine.store.resident()] == [engine_models.tenants[0].name]
    engine.store.release(held)
    engine.store.release(engine.store.acquire(engine_models.tenants[1].name))
    assert [t.adapter.key for t in engine.store.resident()] == [engine_models.tenants[1].name]


def test_memory_budget_bounds_resident_tenants(engine_models: EngineModels,
                                               tmp_path: Path) -> None:
    engine = _engine(engine_models)
    engine.store.release(engine.store.acquire(engine_models.tenants[0].name))
    one = engine.store.resident_bytes()
    budget = _engine(engine_models, memory_budget_bytes=int(one * 2.5))
    for tenant in engine_models.tenants:
        budget.store.release(budget.store.acquire(tenant.name))
    assert len(budget.store.resident()) == 2
    assert budget.store.resident_bytes() <= one * 2.5


def test_seeded_sampling_repeats_itself(engine_models: EngineModels) -> None:
    engine = _engine(engine_models)
    tenant = engine_models.tenants[0].name

    async def run() -> list[list[int]]:
        engine.start()
        try:
            runs = []
            for seed in (7, 7, 8):
                sampling = Sampling(max_tokens=16, temperature=1.0, top_p=0.9, seed=seed)
                runs.append(await _drain(await engine.generate(tenant, _prompt(0), sampling)))
            return runs
        finally:
            engine.stop()

    first, again, other = asyncio.run(run())
    assert first == again
    assert first != other
