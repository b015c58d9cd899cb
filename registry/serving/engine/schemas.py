"""The OpenAI API's request and response bodies, as far as the engine implements them.

Requests take one prompt (text, or token ids for a model without a tokenizer) and one
choice (`n` = 1). Fields of OpenAI's API the engine does not implement (penalties, logprobs,
stop strings) are ignored, as OpenAI-compatible servers commonly do; `ignore_eos` (also
vLLM's) runs to `max_tokens` whatever the model emits. Responses add `token_ids` to each
choice: the generated tokens, besides their text.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=512)
    temperature: float = Field(1.0, ge=0, le=2, description="0: greedy and deterministic")
    top_p: float = Field(1.0, gt=0, le=1)
    # torch seeds a generator with an unsigned 64-bit integer; a larger one would fail the
    # decode step, on the scheduler's thread, for the whole batch.
    seed: int | None = Field(None, ge=0, le=2**64 - 1)
    n: Literal[1] = 1
    stream: bool = False
    ignore_eos: bool = False


class CompletionRequest(SamplingFields):
    prompt: str | list[int] = Field(description="text, or token ids (models without a "
                                                "tokenizer take only ids)")
    max_tokens: int = Field(16, ge=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="default: the rest of the context")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    token_ids: list[int]
    finish_reason: str | None


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    token_ids: list[int]
    finish_reason: str | None


class ChatChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "deltahub"
    root: str  # the base the model runs on
    resident: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
