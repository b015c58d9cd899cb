"""The engine: one base model, its tenants, the scheduler and the tokenizer, started together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from starlette.concurrency import run_in_threadpool

from compress.tensorio import Checkpoint
from registry.serving.engine.errors import ContextTooLong, InvalidGenerationRequest
from registry.serving.engine.model import EngineModel
from registry.serving.engine.scheduler import Generation, Sampling, Scheduler
from registry.serving.engine.tenants import AdapterSource, TenantStore

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass(frozen=True)
class EngineLimits:
    max_tenants: int = 16
    memory_budget_bytes: int = 8_000_000_000  # tenants' signs, α and full tensors
    max_batch: int = 32  # requests decoding together
    max_waiting: int = 64  # requests queued behind them; more get a 503
    dtype: torch.dtype = torch.float32
    device: str = "cpu"


class Engine:
    def __init__(self, base_dir: Path, base_name: str, source: AdapterSource,
                 limits: EngineLimits = EngineLimits()) -> None:
        self.base_name = base_name
        self.limits = limits
        with Checkpoint.open(base_dir) as checkpoint:
            self.model = EngineModel(checkpoint, limits.dtype, limits.device)
            manifest = checkpoint.manifest
        self.store = TenantStore(self.model, manifest, source, base_name,
                                 max_tenants=limits.max_tenants,
                                 memory_budget_bytes=limits.memory_budget_bytes)
        self.scheduler = Scheduler(self.model, self.store.model_lock, self.store.release,
                                   max_batch=limits.max_batch, max_waiting=limits.max_waiting)
        self.tokenizer = _tokenizer(base_dir)
        self.eos_token_ids = _eos_ids(self.model.config)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    def check_prompt(self, prompt: list[int], max_tokens: int) -> None:
        vocab = self.model.config.vocab_size
        if not prompt:
            raise InvalidGenerationRequest("the prompt is empty: send at least one token")
        if any(not 0 <= t < vocab for t in prompt):
            raise InvalidGenerationRequest(f"prompt token ids must lie in [0, {vocab})")
        if len(prompt) + max_tokens > self.model.max_positions:
            raise ContextTooLong(
                f"the prompt ({len(prompt)} tokens) plus max_tokens ({max_tokens}) exceed the "
                f"model's context of {self.model.max_positions} tokens; shorten one of them")

    async def generate(self, model: str, prompt: list[int], sampling: Sampling) -> Generation:
        """Queue a generation of `model` (the base's name or an adapter reference)."""
        self.check_prompt(prompt, sampling.max_tokens)
        self.scheduler.check_room()  # before loading a tenant for a request refused anyway
        lease = await run_in_threadpool(self.store.acquire, model)
        generation = Generation(lease, prompt, sampling, asyncio.get_running_loop())
        try:
            self.scheduler.submit(generation)
        except BaseException:
            self.store.release(lease)
            raise
        return generation

    def stop_ids(self, ignore_eos: bool) -> frozenset[int]:
        return frozenset() if ignore_eos else self.eos_token_ids


def _tokenizer(base_dir: Path) -> Any:
    if not any((base_dir / name).is_file() for name in TOKENIZER_FILES):
        return None  # prompts come as token ids
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_dir)


def _eos_ids(config: Any) -> frozenset[int]:
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return frozenset()
    return frozenset(eos if isinstance(eos, list) else [eos])
