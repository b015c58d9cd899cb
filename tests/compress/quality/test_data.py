"""Evaluation data files: what is read, and every refusal with its message."""

from __future__ import annotations

import json
import pickle
import sysconfig
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from compress.errors import InvalidParameter, PickleRefused, TooLarge
from compress.modeling import tokenizer as tokenizer_module
from compress.quality import (
    DataKind,
    InvalidDataset,
    MissingTokenizer,
    TextTokenizer,
    load_eval_data,
)
from tests.finetune import byte_tokenizer_json

BYTES = TextTokenizer.from_json(byte_tokenizer_json().encode(), "bytes")


def load(path: Path, **options: object) -> torch.Tensor:
    settings: dict[str, object] = {"tokenizer": BYTES, "seq_len": 4, **options}
    return load_eval_data(path, **settings).rows  # type: ignore[arg-type]


def write_ids(path: Path, **tensors: torch.Tensor) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


def test_text_becomes_rows_of_its_tokens(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_bytes("\ufeffhé llo, wörld\n".encode())  # a byte-order mark is not text
    rows = load(text)
    expected = list("hé llo, wörld\n".encode())
    assert rows.dtype == torch.int64
    assert rows.shape == (len(expected) // 4, 4)  # the partial last row is dropped
    assert rows.flatten().tolist() == expected[: rows.numel()]
    assert load(text, max_rows=2).shape == (2, 4)


def test_jsonl_documents_follow_one_another(tmp_path: Path) -> None:
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "abc", "id": 1}\n\n{"text": "defgh"}\n')
    result = load_eval_data(data, tokenizer=BYTES, seq_len=4)
    assert result.kind is DataKind.JSONL
    assert result.name == "docs.jsonl"
    assert result.rows.flatten().tolist() == list(b"abcdefgh")


def test_pretokenized_rows_are_used_as_they_are(tmp_path: Path) -> None:
    ids = torch.arange(24, dtype=torch.int32).reshape(3, 8)
    path = write_ids(tmp_path / "ids.safetensors", input_ids=ids,
                     attention_mask=torch.ones(3, 8, dtype=torch.int64))
    rows = load(path, seq_len=2, tokenizer=None, max_rows=2)  # seq_len is for text only
    assert rows.dtype == torch.int64
    assert torch.equal(rows, ids[:2].long())


def test_long_text_is_tokenized_in_chunks_exactly_as_a_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    source = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([source], trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = TextTokenizer(bpe, "bpe")
    monkeypatch.setattr(tokenizer_module, "CHUNK_CHARS", 500)
    whole = bpe.encode(source, add_special_tokens=False).ids
    assert tokenizer.encode([source]) == whole
    assert tokenizer.encode([source], limit=700) == whole[:700]  # stops early, same ids


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.txt", b"", "has no text"),
    ("blank.txt", b" \n\t\n", "has no text"),
    ("latin1.txt", "caf\xe9 au lait".encode("latin-1"), "not UTF-8 text (invalid continuation "
                                                        "byte at byte 3); save it as UTF-8"),
    ("none.jsonl", b"\n\n", "has no text"),
    ("other.jsonl", b'{"text": "a"}\n{"content": "b"}\n', "other.jsonl line 2: each line must "
                                                         "be a JSON object with a string field "
                                                         "'text' (no such field)"),
    ("number.jsonl", b'{"text": 3}\n', "line 1: each line must be a JSON object with a "
                                      "string field 'text' (it is a number)"),
    ("list.jsonl", b'["text"]\n', "line 1: each line must be a JSON object"),
    ("broken.jsonl", b'{"text": "a"}\n{"text": \n', "broken.jsonl line 2 is not valid JSON"),
    ("nan.jsonl", b'{"text": "a", "score": NaN}\n', "NaN is not a JSON value"),
    ("short.txt", b"abc", "makes 3 tokens, fewer than one row of 4"),
    ("data.csv", b"text\nabc\n", "unknown kind of data file"),
])
def test_bad_text_files_are_refused_by_name(tmp_path: Path, name: str, content: bytes,
                                            message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidDataset) as refused:
        load(path)
    assert message in refused.value.detail


@pytest.mark.parametrize("content", [
    pickle.dumps({"text": "hi"}, protocol=2),
    pickle.dumps(["hi", "there"], protocol=0),  # no magic bytes: ASCII opcodes
])
def test_pickles_are_refused_whatever_their_suffix(tmp_path: Path, content: bytes) -> None:
    for name in ("data.txt", "data.jsonl", "data.safetensors"):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(PickleRefused, match="never loaded"):
            load(path)
    with pytest.raises(PickleRefused, match="named like a pickle"):
        load(tmp_path / "data.pkl")  # refused by name: the file need not even exist


@pytest.mark.parametrize(("tensors", "message"), [
    ({"input_ids": torch.tensor([[1.0, float("nan")]])}, "input_ids has dtype F32; token ids "
                                                         "are integers"),
    ({"input_ids": torch.ones(2, 3, dtype=torch.bool)}, "dtype BOOL"),
    ({"input_ids": torch.ones(6, dtype=torch.int64)}, "input_ids is [6]; it must be [n, seq]"),
    ({"input_ids": torch.ones(0, 4, dtype=torch.int64)}, "at least one row"),
    ({"input_ids": torch.ones(3, 1, dtype=torch.int64)}, "of at least 2 tokens"),
    ({"tokens": torch.ones(2, 4, dtype=torch.int64)}, "has no tensor 'input_ids' (it has: "
                                                      "tokens)"),
    ({"input_ids": torch.tensor([[3, -1]])}, "negative ids (-1)"),
    ({"input_ids": torch.ones(2, 4, dtype=torch.int64),
      "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}, "the rows are padded"),
])
def test_bad_token_files_are_refused_by_name(tmp_path: Path, tensors: dict[str, torch.Tensor],
                                             message: str) -> None:
    path = write_ids(tmp_path / "ids.safetensors", **tensors)
    with pytest.raises(InvalidDataset) as refused:
        load(path)
    assert message in refused.value.detail


def test_ids_beyond_the_vocabulary_are_refused(tmp_path: Path) -> None:
    path = write_ids(tmp_path / "ids.safetensors", input_ids=torch.tensor([[5, 300]]))
    assert load(path, vocab_size=301).tolist() == [[5, 300]]
    with pytest.raises(InvalidDataset, match="token id 300, but the model's vocabulary has 256"):
        load(path, vocab_size=256)


def test_files_over_the_limit_are_refused_before_reading(tmp_path: Path) -> None:
    for path in (tmp_path / "big.txt", write_ids(tmp_path / "big.safetensors",
                                                 input_ids=torch.ones(64, 64, dtype=torch.int64))):
        if path.suffix == ".txt":
            path.write_text("x" * 5000)
        with pytest.raises(TooLarge, match=f"{path.name} is {path.stat().st_size} bytes, over "
                                           "the limit of 4096"):
            load(path, max_bytes=4096)


def test_text_without_a_tokenizer_asks_for_one_or_for_ids(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("some text to score")
    with pytest.raises(MissingTokenizer) as refused:
        load(path, tokenizer=None)
    assert "no tokenizer.json" in refused.value.detail
    assert "pre-tokenized ids (.safetensors with an integer tensor input_ids" in \
        refused.value.detail


def test_missing_files_and_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataset, match="does not exist"):
        load(tmp_path / "absent.txt")
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(InvalidDataset, match="is not a file"):
        load(tmp_path / "dir.txt")
    with pytest.raises(InvalidParameter, match="seq_len must be at least 2"):
        load(tmp_path / "absent.txt", seq_len=1)


def test_a_bad_tokenizer_file_is_refused(tmp_path: Path) -> None:
    from compress.errors import InvalidModel

    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps({"model": "nothing like a tokenizer"}))
    with pytest.raises(InvalidModel, match=r"is not a tokenizers tokenizer\.json"):
        TextTokenizer.from_file(tmp_path)
    with pytest.raises(InvalidModel, match="does not exist"):
        TextTokenizer.from_file(tmp_path / "missing.json")
