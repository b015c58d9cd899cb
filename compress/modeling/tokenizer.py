"""Turn evaluation text into a model's token ids with the model's own `tokenizer.json`.

Only tokenizer.json (plain JSON, runs no code); no BOS/EOS added; long texts are encoded a
chunk at a time at safe split points, so the ids equal the whole text's with bounded memory.
See docs/codecs.md, "Quality evaluation and shared model code".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

from compress.errors import InvalidModel, MissingDependency, TooLarge
from compress.tensorio import ModelInput, as_source, describe_model

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
# Llama-3's tokenizer.json is 9 MB, Qwen's 7 MB; a limit well above both.
MAX_TOKENIZER_BYTES = 64 * 2**20
CHUNK_CHARS = 256 * 2**10
_BATCH_CHUNKS = 8  # chunks encoded per call (tokenizers encodes a batch in parallel)
_LINE_START = re.compile(r"\n(?=\S)")


class TextTokenizer:
    """A `tokenizers.Tokenizer` and the name of where it came from (for messages)."""

    def __init__(self, tokenizer: Tokenizer, source: str) -> None:
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def from_json(cls, data: bytes, source: str) -> TextTokenizer:
        """Parse the bytes of a tokenizer.json; `source` names it in errors."""
        if len(data) > MAX_TOKENIZER_BYTES:
            _too_large(source, len(data))
        tokenizers = _tokenizers()
        try:
            text = data.decode("utf-8")
            tokenizer = tokenizers.Tokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises plain Exception on a bad file
            raise InvalidModel(f"{source} is not a tokenizers tokenizer.json ({exc}); save "
                               "the model's tokenizer again with save_pretrained") from exc
        return cls(tokenizer, source)

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        try:
            size = path.stat().st_size
            if size > MAX_TOKENIZER_BYTES:
                _too_large(path, size)
            return cls.from_json(path.read_bytes(), str(path))
        except FileNotFoundError as exc:
            raise InvalidModel(f"{path} does not exist; give a tokenizer.json file") from exc

    def encode(self, texts: Iterable[str], limit: int | None = None) -> list[int]:
        """The ids of `texts`, one after the other, stopping once `limit` ids are found."""
        ids: list[int] = []
        pending: list[str] = []
        for chunk in _chunks(texts):
            pending.append(chunk)
            if len(pending) == _BATCH_CHUNKS:
                self._encode_into(ids, pending)
                pending = []
                if limit is not None and len(ids) >= limit:
                    return ids[:limit]
        self._encode_into(ids, pending)
        return ids if limit is None else ids[:limit]

    def _encode_into(self, ids: list[int], chunks: list[str]) -> None:
        if chunks:
            for encoding in self.tokenizer.encode_batch(chunks, add_special_tokens=False):
                ids.extend(encoding.ids)


def model_tokenizer(*models: ModelInput) -> TextTokenizer | None:
    """The tokenizer.json of the first of `models` that has one, or None."""
    for model in models:
        source = as_source(model)
        try:
            if TOKENIZER_FILE not in source.files():
                continue
            size = source.size(TOKENIZER_FILE)
            if size > MAX_TOKENIZER_BYTES:
                _too_large(f"{describe_model(model)}/{TOKENIZER_FILE}", size)
            data = source.read_bytes(TOKENIZER_FILE)
        finally:
            source.close()
        return TextTokenizer.from_json(data, f"{describe_model(model)}/{TOKENIZER_FILE}")
    return None


def _too_large(name: object, size: int) -> NoReturn:
    raise TooLarge(f"{name} is {size} bytes, over the limit of {MAX_TOKENIZER_BYTES} for a "
                   "tokenizer.json")


def _chunks(texts: Iterable[str]) -> Iterator[str]:
    """Each text in pieces of about CHUNK_CHARS, cut only where a new line starts."""
    for text in texts:
        start = 0
        while len(text) - start > CHUNK_CHARS:
            cut = _LINE_START.search(text, start + CHUNK_CHARS)
            if cut is None:
                break
            yield text[start:cut.start() + 1]
            start = cut.start() + 1
        if start < len(text):
            yield text[start:]


def _tokenizers() -> ModuleType:
    try:
        import tokenizers
    except ImportError as exc:
        raise MissingDependency("tokenizers", exc) from exc
    return tokenizers
