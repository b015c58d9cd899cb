"""Continuous batching: requests join and leave the running batch between decode steps.

One thread runs the model. Each step it admits waiting requests (up to `max_batch`),
drops cancelled ones, and runs every running request's new tokens (a newcomer's whole
prompt, then one token each) as one forward pass with rows sorted by tenant slot. Tokens
go back to the request's asyncio queue on its event loop. The waiting queue is bounded:
past `max_waiting` a request is refused at once (503) instead of waiting without end.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import torch

from registry.serving.engine.errors import EngineOverloaded, GenerationFailed
from registry.serving.engine.model import EngineModel, KVCache, StepRows
from registry.serving.engine.tenants import Lease

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0  # 0: greedy, deterministic
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" or "length", as OpenAI names them


@dataclass
class Generation:
    """One request in flight: what it runs and where its tokens go."""

    lease: Lease
    prompt: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[int | Finished | BaseException] = field(default_factory=asyncio.Queue)
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    cache: KVCache | None = None
    generator: torch.Generator | None = None

    def send(self, event: int | Finished | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def next_tokens(self) -> list[int]:
        return self.prompt if not self.generated else self.generated[-1:]

    async def tokens(self) -> AsyncIterator[int | Finished]:
        """The generated tokens as they come, then how it finished; cancels if left early."""
        try:
            while True:
                event = await self.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            self.cancelled = True  # a no-op once finished; stops the work on a disconnect


class Scheduler:
    def __init__(self, model: EngineModel, model_lock: threading.Lock,
                 release: Callable[[Lease], None], *, max_batch: int, max_waiting: int) -> None:
        self.model = model
        self.model_lock = model_lock
        self.release = release
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.waiting: deque[Generation] = deque()
        self.running: list[Generation] = []
        self.steps = 0
        self.tokens_generated = 0
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="engine-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def check_room(self) -> None:
        if len(self.waiting) >= self.max_waiting:
            raise EngineOverloaded(
                f"{len(self.waiting)} requests are already waiting (the engine's limit, "
                "--max-waiting); retry after a moment, or add a replica")

    def submit(self, generation: Generation) -> None:
        with self._wake:
            self.check_room()
            self.waiting.append(generation)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and not self.waiting and not self.running:
                    self._wake.wait()
                if self._stopped:
                    break
                self._admit()
            try:
                self._step()
            except Exception as exc:  # a failed step fails its requests, not the engine
                log.exception("decode step failed")
                for generation in self.running:
                    self._finish(generation, GenerationFailed(
                        f"the decode step failed ({type(exc).__name__}: {exc}); retry, and "
                        "report it if it persists"))
                self.running = []
        for generation in [*self.running, *self.waiting]:
            self._finish(generation, GenerationFailed("the engine is shutting down; retry "
                                                      "on another replica"))

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.max_batch:
            generation = self.waiting.popleft()
            length = len(generation.prompt) + generation.sampling.max_tokens
            generation.cache = self.model.new_cache(length)
            if generation.sampling.seed is not None:
                generation.generator = torch.Generator().manual_seed(generation.sampling.seed)
            self.running.append(generation)

    def _step(self) -> None:
        for generation in [g for g in self.running if g.cancelled]:
            self._finish(generation, Finished("cancelled"))
        self.running = [g for g in self.running if not g.cancelled]
        if not self.running:
            return
        self.running.sort(key=lambda g: g.lease.slot)
        rows = [StepRows(g.lease.slot, g.next_tokens(), g.cache) for g in self.running
                if g.cache is not None]
        with self.model_lock:
            logits = self.model.forward(rows)
        self.steps += 1
        still = []
        for generation, row_logits in zip(self.running, logits, strict=True):
            token = _sample(row_logits, generation.sampling, generation.generator)
            generation.generated.append(token)
            self.tokens_generated += 1
            generation.send(token)
            done = _finish_reason(generation, token)
            if done is None:
                still.append(generation)
            else:
                self._finish(generation, Finished(done))
        self.running = still

    def _finish(self, generation: Generation, event: Finished | BaseException) -> None:
        generation.cache = None
        self.release(generation.lease)
        generation.send(event)


def _finish_reason(generation: Generation, token: int) -> str | None:
    if token in generation.sampling.stop_token_ids:
        return "stop"
    if len(generation.generated) >= generation.sampling.max_tokens:
        return "length"
    return None


def _sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    if sampling.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float().cpu() / sampling.temperature, dim=-1)
    if sampling.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(0) - sorted_probs < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))
