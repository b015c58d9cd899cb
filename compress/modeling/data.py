"""Evaluation (and calibration) data: read a file, check it, and cut it into rows of ids.

`.txt`, `.jsonl` (a string field `text` per line) or pre-tokenized `.safetensors`
(`input_ids` [n, seq]). Pickles, oversized and malformed files are refused, naming the file
and what to fix. See docs/codecs.md, "Quality evaluation and shared model code".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch

from compress.errors import (
    CodecError,
    InvalidDataset,
    InvalidParameter,
    MissingTokenizer,
    TooLarge,
)
from compress.modeling.tokenizer import TextTokenizer
from compress.tensorio import (
    FLOAT_DTYPES,
    PICKLE_SNIFF_BYTES,
    Checkpoint,
    describe_pickle,
    describe_pickle_stream,
    pickle_refusal,
    refuse_pickle_name,
    strictjson,
)

# An evaluation needs a few hundred rows; a limit far above that, and far below memory.
DEFAULT_MAX_DATA_BYTES = 256 * 2**20
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TEXT_FIELD = "text"


class DataKind(StrEnum):
    TEXT = ".txt"
    JSONL = ".jsonl"
    TOKENS = ".safetensors"


ACCEPTED = ", ".join(f"{kind.value}" for kind in DataKind)


@dataclass(frozen=True)
class EvalData:
    name: str  # the file's name, as reports show it
    kind: DataKind
    rows: torch.Tensor  # int64 [n, seq]

    @property
    def seq_len(self) -> int:
        return int(self.rows.shape[1])


def data_kind(path: str | os.PathLike[str]) -> DataKind:
    """The kind of data file `path` names; pickles and unknown suffixes are refused."""
    name = Path(path).name
    refuse_pickle_name(name)
    suffix = Path(name).suffix.lower()
    for kind in DataKind:
        if suffix == kind.value:
            return kind
    raise InvalidDataset(f"{name}: unknown kind of data file; give UTF-8 text (.txt), JSON "
                         "lines with a \"text\" field (.jsonl), or token ids (.safetensors "
                         "with an integer tensor input_ids [n, seq])")


def load_eval_data(path: str | os.PathLike[str], *, tokenizer: TextTokenizer | None,
                   seq_len: int, max_rows: int | None = None, vocab_size: int | None = None,
                   max_bytes: int = DEFAULT_MAX_DATA_BYTES) -> EvalData:
    """Read `path` as rows of token ids, the first `max_rows` of them at most.

    `tokenizer` turns text into ids (None: text is refused with MissingTokenizer);
    `seq_len` is the row length for text (pre-tokenized rows keep theirs); with
    `vocab_size`, every id must be below it.
    """
    if seq_len < 2:
        raise InvalidParameter(f"seq_len must be at least 2 (a token and its successor), "
                               f"got {seq_len}")
    if max_rows is not None and max_rows < 1:
        raise InvalidParameter(f"max_rows must be positive, got {max_rows}")
    kind = data_kind(path)
    name = Path(path).name
    if kind is DataKind.TOKENS:
        rows = _read_token_file(Path(path), max_bytes)
    else:
        if tokenizer is None:
            raise MissingTokenizer(
                f"{name} is text, and the model has no tokenizer.json to tokenize it with; "
                "save the model's tokenizer beside its weights "
                "(AutoTokenizer.from_pretrained(...).save_pretrained(dir) writes one), give "
                "a tokenizer.json explicitly, or give pre-tokenized ids (.safetensors with an "
                "integer tensor input_ids [n, seq])")
        documents = read_documents(path, max_bytes)
        limit = None if max_rows is None else max_rows * seq_len
        ids = tokenizer.encode(documents, limit)
        rows = _cut_rows(name, ids, seq_len)
    if max_rows is not None:
        rows = rows[:max_rows]
    if vocab_size is not None:
        check_vocabulary(name, rows, vocab_size)
    return EvalData(name, kind, rows)


def check_data_file(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_DATA_BYTES
                    ) -> DataKind:
    """Check `path` as `load_eval_data` reads it, short of tokenizing; its kind.

    Text must decode and hold some (every .jsonl line a "text" string), token ids must
    be a well-formed `input_ids` [n, seq]. The registry runs this on each uploaded data
    set file, so that what it stores an evaluation or a distillation can read.
    """
    kind = data_kind(path)
    if kind is DataKind.TOKENS:
        _check_token_file(Path(path), max_bytes)  # nothing widened whole
    else:
        read_documents(path, max_bytes)
    return kind


def read_documents(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_DATA_BYTES
                   ) -> list[str]:
    """The documents of a .txt (the whole text) or .jsonl file (each line's "text")."""
    kind = data_kind(path)
    if kind is DataKind.TOKENS:
        raise InvalidDataset(f"{Path(path).name} holds token ids, not text")
    path = Path(path)
    data = _read_bytes(path, max_bytes)
    text = _decode(path.name, data)
    documents = [text] if kind is DataKind.TEXT else _jsonl_texts(path.name, text)
    if not any(doc.strip() for doc in documents):
        raise InvalidDataset(f"{path.name} has no text (it is empty or only whitespace)")
    return documents


def read_token_rows(path: str | os.PathLike[str]) -> torch.Tensor:
    """The `input_ids` [n, seq] of a .safetensors file, as int64, checked."""
    with Checkpoint.open(path) as data:
        _check_token_ids(Path(path).name, data)
        return data.tensor(INPUT_IDS).to(torch.int64)


def _check_token_ids(name: str, data: Checkpoint) -> None:
    """Refuse an `input_ids` that is missing, not integers, not [n, seq], padded, or
    holding a negative id, reading the tensors a chunk at a time (`_chunks`)."""
    if INPUT_IDS not in data.manifest:
        found = ", ".join(data.manifest.names[:5]) or "none"
        raise InvalidDataset(f"{name} has no tensor {INPUT_IDS!r} (it has: {found}); save "
                             f"the token ids as an integer tensor {INPUT_IDS} [n, seq]")
    entry = data.entry(INPUT_IDS)
    if entry.dtype in FLOAT_DTYPES or entry.dtype == "BOOL":
        raise InvalidDataset(f"{name}: {INPUT_IDS} has dtype {entry.dtype}; token ids are "
                             "integers: save them as int64 or int32")
    if len(entry.shape) != 2 or entry.shape[0] < 1 or entry.shape[1] < 2:
        raise InvalidDataset(f"{name}: {INPUT_IDS} is {list(entry.shape)}; it must be "
                             "[n, seq] with at least one row of at least 2 tokens")
    if ATTENTION_MASK in data.manifest and not all(
            bool(chunk.all()) for chunk in _chunks(data, ATTENTION_MASK)):
        raise InvalidDataset(f"{name}: {ATTENTION_MASK} has zeros, so the rows are padded; "
                             "every position is scored: give unpadded rows of one length")
    # Widened per chunk, as the rows will be (a uint64 id over 2^63 turns negative).
    lowest = min(int(chunk.to(torch.int64).min()) for chunk in _chunks(data, INPUT_IDS))
    if lowest < 0:
        raise InvalidDataset(f"{name}: {INPUT_IDS} holds negative ids ({lowest}); "
                             "token ids are 0 or more")


# Values read at a time when a tensor is only checked: 8 MiB once widened to int64,
# where widening a whole 128 MiB uint8 file took 1 GiB.
_CHECK_CHUNK_VALUES = 2**20


def _chunks(data: Checkpoint, name: str) -> Iterator[torch.Tensor]:
    """Tensor `name`, flat, `_CHECK_CHUNK_VALUES` values at a time in its stored dtype,
    each read into the same buffer (so a chunk is valid until the next is read)."""
    spec = data.manifest[name]
    header = data.headers[spec.file]
    entry = header.tensors[name]
    step = _CHECK_CHUNK_VALUES * torch.empty(0, dtype=entry.torch_dtype).element_size()
    buffer = torch.empty(min(entry.nbytes, step), dtype=torch.uint8)
    for begin in range(0, entry.nbytes, step):
        part = buffer[: min(step, entry.nbytes - begin)]
        data.source.read_into(spec.file, header.data_start + entry.start + begin,
                              part.numpy().data)
        yield part.view(entry.torch_dtype)


def _read_token_file(path: Path, max_bytes: int) -> torch.Tensor:
    _check_token_bytes(path, max_bytes)
    return read_token_rows(path)


def _check_token_file(path: Path, max_bytes: int) -> None:
    _check_token_bytes(path, max_bytes)
    with Checkpoint.open(path) as data:
        _check_token_ids(path.name, data)


def _check_token_bytes(path: Path, max_bytes: int) -> None:
    """Refuse a token file over `max_bytes`, or a pickle, before it is parsed."""
    size = _check_size(path, max_bytes)
    with path.open("rb") as file:
        _refuse_pickle(path.name, file.read(PICKLE_SNIFF_BYTES), size)


def check_vocabulary(name: str, rows: torch.Tensor, vocab_size: int) -> None:
    top = int(rows.max())
    if top >= vocab_size:
        raise InvalidDataset(f"{name} holds token id {top}, but the model's vocabulary has "
                             f"{vocab_size} ids; the ids come from another tokenizer")


def _cut_rows(name: str, ids: list[int], seq_len: int) -> torch.Tensor:
    n = len(ids) // seq_len
    if n == 0:
        raise InvalidDataset(f"{name} makes {len(ids)} tokens, fewer than one row of {seq_len}; "
                             "give more text or a shorter sequence length")
    return torch.tensor(ids[: n * seq_len], dtype=torch.int64).reshape(n, seq_len)


def _check_size(path: Path, max_bytes: int) -> int:
    if not path.exists():
        raise InvalidDataset(f"{path} does not exist")
    if not path.is_file():
        raise InvalidDataset(f"{path} is not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise TooLarge(f"{path.name} is {size} bytes, over the limit of {max_bytes} for a "
                       "data file; evaluation uses a few hundred rows, so give a sample")
    return size


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    _check_size(path, max_bytes)
    data = path.read_bytes()
    _refuse_pickle(path.name, data[:PICKLE_SNIFF_BYTES], len(data))
    return data


def _refuse_pickle(name: str, head: bytes, size: int) -> None:
    """Refuse a file whose first bytes are a pickle's (protocol 0 and 1 look like text)."""
    what = describe_pickle(head[:8]) or describe_pickle_stream(head, complete=len(head) == size)
    if what is not None:
        raise pickle_refusal(name, what)


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a leading byte-order mark is no text
    except UnicodeDecodeError as exc:
        raise InvalidDataset(f"{name} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                             "save it as UTF-8") from exc


def _jsonl_texts(name: str, text: str) -> list[str]:
    texts = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            record = strictjson.loads(line, where)
        except CodecError as exc:
            raise InvalidDataset(exc.detail) from exc
        value = record.get(TEXT_FIELD) if isinstance(record, dict) else None
        if not isinstance(value, str):
            got = "no such field" if not isinstance(record, dict) or TEXT_FIELD not in record \
                else f"it is {_json_kind(value)}"
            raise InvalidDataset(f"{where}: each line must be a JSON object with a string "
                                 f"field {TEXT_FIELD!r} ({got})")
        texts.append(value)
    return texts


def _json_kind(value: object) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    kinds = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (list, "an array"),
             (dict, "an object"))
    return next((name for kind, name in kinds if isinstance(value, kind)), "not a string")
