"""`check_data_file`: load_eval_data's checks without a tokenizer (the registry's upload
check), so the two never disagree on a file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from compress.errors import InvalidDataset, PickleRefused, TooLarge
from compress.quality import DataKind, check_data_file, load_eval_data


def test_each_kind_passes_and_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some text")
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n')
    save_file({"input_ids": torch.ones(2, 3, dtype=torch.int32)}, tmp_path / "c.safetensors")
    assert check_data_file(tmp_path / "a.txt") is DataKind.TEXT
    assert check_data_file(tmp_path / "b.jsonl") is DataKind.JSONL
    assert check_data_file(tmp_path / "c.safetensors") is DataKind.TOKENS


def test_it_refuses_what_load_eval_data_refuses(tmp_path: Path) -> None:
    ids = tmp_path / "ids.safetensors"
    save_file({"input_ids": torch.tensor([[3, -1]])}, ids)
    for check in (lambda: check_data_file(ids),
                  lambda: load_eval_data(ids, tokenizer=None, seq_len=2)):
        with pytest.raises(InvalidDataset, match="negative ids"):
            check()
    pickled = tmp_path / "p.txt"
    pickled.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(PickleRefused):
        check_data_file(pickled)
    with pytest.raises(TooLarge):
        check_data_file(ids, max_bytes=8)
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(InvalidDataset, match="unknown kind"):
        check_data_file(tmp_path / "x.csv")
