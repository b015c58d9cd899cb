"""The engine's OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, /v1/models.

`model` names the base (the base alone) or an adapter as the registry names it; the engine
loads the adapter on first use. Streaming answers are server-sent events ending in
`data: [DONE]`. A client that disconnects cancels its request at the next decode step.
Errors render as the registry's do: `{"error": <ClassName>, "detail": ...}`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from registry.serving.engine.auth import RegistryTokens
from registry.serving.engine.engine import Engine
from registry.serving.engine.errors import EngineError, InvalidGenerationRequest
from registry.serving.engine.metrics import EngineMetrics
from registry.serving.engine.scheduler import Finished, Generation, Sampling
from registry.serving.engine.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunk,
    ChatChunkChoice,
    ChatDelta,
    ChatRequest,
    ChatResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    SamplingFields,
    Usage,
)

DISCONNECT_POLL_SECONDS = 0.2
DEFAULT_CHAT_MAX_TOKENS = 256


def create_app(engine: Engine, tokens: RegistryTokens | None) -> FastAPI:
    """`tokens=None` serves without authentication (a replica behind an authenticating proxy)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="deltahub engine", lifespan=lifespan)
    metrics = EngineMetrics(engine)

    async def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        if tokens is not None:
            await run_in_threadpool(tokens.check, authorization)

    auth = [Depends(authorized)]

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> JSONResponse:
        return JSONResponse({"error": type(exc).__name__, "detail": exc.detail},
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                 for e in exc.errors()]
        return JSONResponse({"error": "ValidationError",
                             "detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                    ) -> Response:
        response = await call_next(request)
        metrics.count(request.url.path, response.status_code)
        return response

    @app.get("/v1/models", dependencies=auth)
    async def list_models() -> ModelList:
        resident = {t.adapter.key for t in engine.store.resident()}
        adapters = await run_in_threadpool(engine.store.source.available)
        cards = [ModelCard(id=engine.base_name, root=engine.base_name, resident=True)]
        cards += [ModelCard(id=a.label, root=engine.base_name, resident=a.key in resident)
                  for a in adapters]
        return ModelList(data=cards)

    @app.post("/v1/completions", dependencies=auth, response_model=None)
    async def completions(body: CompletionRequest, request: Request
                          ) -> CompletionResponse | StreamingResponse:
        prompt = _encode_prompt(engine, body.prompt)
        generation = await engine.generate(body.model, prompt, _sampling(engine, body,
                                                                         body.max_tokens))
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        model = generation.lease.model
        if body.stream:
            async def chunks() -> AsyncIterator[str]:
                async for token_ids, text, reason in _pieces(engine, generation):
                    choice = CompletionChoice(text=text, token_ids=token_ids,
                                              finish_reason=reason)
                    yield _event(CompletionResponse(id=ident, created=created, model=model,
                                                    choices=[choice]))
                yield "data: [DONE]\n\n"

            return _sse(chunks())
        ids, reason = await _collect(generation, request)
        return CompletionResponse(
            id=ident, created=created, model=model,
            choices=[CompletionChoice(text=_decode(engine, ids), token_ids=ids,
                                      finish_reason=reason)],
            usage=_usage(prompt, ids))

    @app.post("/v1/chat/completions", dependencies=auth, response_model=None)
    async def chat(body: ChatRequest, request: Request) -> ChatResponse | StreamingResponse:
        prompt = _chat_prompt(engine, body)
        room = engine.model.max_positions - len(prompt)
        max_tokens = body.max_tokens or max(1, min(DEFAULT_CHAT_MAX_TOKENS, room))
        generation = await engine.generate(body.model, prompt,
                                           _sampling(engine, body, max_tokens))
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        model = generation.lease.model
        if body.stream:
            async def chunks() -> AsyncIterator[str]:
                first = ChatChunkChoice(delta=ChatDelta(role="assistant", content=""),
                                        token_ids=[], finish_reason=None)
                yield _event(ChatChunk(id=ident, created=created, model=model, choices=[first]))
                async for token_ids, text, reason in _pieces(engine, generation):
                    choice = ChatChunkChoice(delta=ChatDelta(content=text or None),
                                             token_ids=token_ids, finish_reason=reason)
                    yield _event(ChatChunk(id=ident, created=created, model=model,
                                           choices=[choice]))
                yield "data: [DONE]\n\n"

            return _sse(chunks())
        ids, reason = await _collect(generation, request)
        choice = ChatChoice(message=AssistantMessage(content=_decode(engine, ids)),
                            token_ids=ids, finish_reason=reason)
        return ChatResponse(id=ident, created=created, model=model, choices=[choice],
                            usage=_usage(prompt, ids))

    @app.get("/metrics", dependencies=auth)
    async def scrape() -> Response:
        return metrics.response()

    return app


def _sampling(engine: Engine, body: SamplingFields, max_tokens: int) -> Sampling:
    return Sampling(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                    seed=body.seed, stop_token_ids=engine.stop_ids(body.ignore_eos))


def _encode_prompt(engine: Engine, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, list):
        return prompt
    if engine.tokenizer is None:
        raise InvalidGenerationRequest(
            "this base has no tokenizer: send the prompt as an array of token ids")
    return list(engine.tokenizer.encode(prompt))


def _chat_prompt(engine: Engine, body: ChatRequest) -> list[int]:
    tokenizer = engine.tokenizer
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise InvalidGenerationRequest(
            "this base has no chat template: use /v1/completions with a prompt")
    text = tokenizer.apply_chat_template([m.model_dump() for m in body.messages],
                                         tokenize=False, add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))


def _decode(engine: Engine, ids: list[int]) -> str:
    if engine.tokenizer is None:
        return ""  # the ids are the answer: choices[].token_ids
    return str(engine.tokenizer.decode(ids, skip_special_tokens=True))


async def _pieces(engine: Engine, generation: Generation
                  ) -> AsyncIterator[tuple[list[int], str, str | None]]:
    """(new token ids, their text, finish reason) as the tokens come.

    The text of a step is what decoding all tokens so far adds to the text before it, so a
    character split over several tokens arrives whole; text held back for a character
    never completed comes with the last event.
    """
    ids: list[int] = []
    sent = ""
    async for event in generation.tokens():
        if isinstance(event, Finished):
            yield [], _decode(engine, ids)[len(sent):], event.reason  # what was held back
            return
        ids.append(event)
        text = _decode(engine, ids)
        if text.endswith("\ufffd"):  # an incomplete character: wait for its next token
            yield [event], "", None
            continue
        yield [event], text[len(sent):], None
        sent = text


async def _collect(generation: Generation, request: Request) -> tuple[list[int], str]:
    """All the tokens and the finish reason; cancels the generation if the client leaves."""
    ids: list[int] = []
    reason = "length"
    failed: EngineError | None = None
    async with anyio.create_task_group() as group:
        async def watch() -> None:
            while not await request.is_disconnected():
                await anyio.sleep(DISCONNECT_POLL_SECONDS)
            generation.cancelled = True

        group.start_soon(watch)
        try:
            async for event in generation.tokens():
                if isinstance(event, Finished):
                    reason = event.reason
                else:
                    ids.append(event)
        except EngineError as exc:  # raised past the group, not wrapped in an ExceptionGroup
            failed = exc
        group.cancel_scope.cancel()
    if failed is not None:
        raise failed
    return ids, reason


def _usage(prompt: list[int], ids: list[int]) -> Usage:
    return Usage(prompt_tokens=len(prompt), completion_tokens=len(ids),
                 total_tokens=len(prompt) + len(ids))


def _event(payload: Any) -> str:
    return f"data: {json.dumps(payload.model_dump(mode='json'))}\n\n"


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    async def guarded() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        except EngineError as exc:  # the status is sent: the error goes as the last event
            body = {"error": type(exc).__name__, "detail": exc.detail}
            yield f"data: {json.dumps(body)}\n\n"

    return StreamingResponse(guarded(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
