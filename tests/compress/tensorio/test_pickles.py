"""Pickle checkpoints: refused by name, by magic bytes, and by their opcodes (protocols 0, 1)."""

from __future__ import annotations

import collections
import fractions
import json
import pickle
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from compress.errors import PickleRefused
from compress.tensorio import (
    PICKLE_SNIFF_BYTES,
    describe_pickle,
    describe_pickle_stream,
    read_header,
    refuse_pickle_name,
)
from compress.tensorio.pickles import PICKLE_SUFFIXES
from tests.compress.tensorio.helpers import sentencepiece_model_bytes, write
from tests.malformed import PICKLE_CASES, MalformedCase, valid_safetensors

# --- by name and by magic bytes --------------------------------------------------------------


@pytest.mark.parametrize("suffix", [*PICKLE_SUFFIXES, ".PT", ".Bin"])
def test_pickle_names_are_refused_before_reading(tmp_path: Path, suffix: str) -> None:
    name = "pytorch_model" + suffix
    with pytest.raises(PickleRefused, match="named like a pickle checkpoint"):
        refuse_pickle_name(name)
    # Even valid safetensors bytes are not read under a pickle name.
    with pytest.raises(PickleRefused, match=name):
        read_header(write(tmp_path, valid_safetensors(), name))


@pytest.mark.parametrize("name", ["model.safetensors", "binary.model", "config.json", "a.bin.x"])
def test_other_names_pass(name: str) -> None:
    refuse_pickle_name(name)


@pytest.mark.parametrize("case", PICKLE_CASES, ids=lambda c: c.id)
def test_pickle_refusal_says_what_to_do(tmp_path: Path, case: MalformedCase) -> None:
    with pytest.raises(PickleRefused) as info:
        read_header(write(tmp_path, case.data))
    assert "never loaded" in info.value.detail
    assert "safetensors" in info.value.detail


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"\x80\x02}q\x00X\x01\x00", "protocol 2"),
        (b"\x80\x05\x95\x0a\x00\x00\x00\x00", "protocol 5"),
        (b"\x80\x03", "protocol 3"),  # too short to be a length: still a pickle
        (b"PK\x03\x04\x14\x00\x00\x00", "zip archive"),
        (b"\x93NUMPY\x01\x00", ".npy"),
        (b"\x80\x01\x00\x00\x00\x00\x00\x00", None),  # protocol 1 does not exist
        (b"\x80\x06}\x94\x00\x00\x00\x00", None),
        (struct.pack("<Q", 640), "protocol 2"),  # describe_pickle only sniffs
        (b"", None),
    ],
)
def test_describe_pickle(prefix: bytes, expected: str | None) -> None:
    got = describe_pickle(prefix)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert expected in got


# --- pickles without magic bytes (protocols 0 and 1) --------------------------------------------


class Weights:
    """A class instance: its pickle names a global and rebuilds it (GLOBAL, REDUCE, BUILD)."""

    def __init__(self) -> None:
        self.weight = [0.5] * 8


PICKLED: dict[str, Any] = {
    "state_dict": {"model.embed.weight": [[0.1, 0.2], [0.3, 0.4]], "step": 7},
    "ordered_dict": collections.OrderedDict(a=1, b=2.5),
    "fraction": fractions.Fraction(3, 4),
    "instance": Weights(),
    "large_list": list(range(50_000)),  # far past the sniffed prefix
    "large_bytes": bytes(range(256)) * 1000,  # one long opcode argument past the prefix
}


@pytest.mark.parametrize("protocol", [0, 1])
@pytest.mark.parametrize("name", list(PICKLED))
def test_protocol_0_and_1_pickles_are_found(name: str, protocol: int) -> None:
    data = pickle.dumps(PICKLED[name], protocol=protocol)
    assert describe_pickle(data[:8]) is None  # no magic bytes to sniff
    head = data[:PICKLE_SNIFF_BYTES]
    what = describe_pickle_stream(head, complete=len(data) <= PICKLE_SNIFF_BYTES)
    assert what is not None
    assert "protocol 0 or 1" in what


def test_a_prefix_that_runs_out_mid_opcode_is_a_pickle_only_if_incomplete() -> None:
    data = pickle.dumps(PICKLED["large_list"], protocol=0)
    assert describe_pickle_stream(data[:5000], complete=False) is not None
    assert describe_pickle_stream(data[:5000], complete=True) is None  # cut: cannot load


NOT_PICKLES: dict[str, bytes] = {
    "readme": b"# My adapter\n\nA LoRA of Llama-2-7B for summarisation. Load it with peft.\n",
    "note_starting_like_opcodes": b"N.B. this model was trained on public data only.\n",
    "dotted_list": b"a. first\nb. second\n",
    "vocab_txt": b"[PAD]\n[UNK]\n[CLS]\nthe\nof\n",
    "merges_txt": b"#version: 0.2\n\xc4\xa0 t\n\xc4\xa0 a\n",
    "json_object": json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}).encode(),
    "json_number": b"0.5",
    "json_true": b"true",
    "text_of_opcode_letters": b"(lp0\nVa\np1\naI1\nas",  # an unfinished list, no STOP
    "sentencepiece": sentencepiece_model_bytes(),
    "empty": b"",
}


@pytest.mark.parametrize("name", list(NOT_PICKLES))
def test_text_json_and_protobuf_are_not_pickles(name: str) -> None:
    data = NOT_PICKLES[name]
    assert describe_pickle_stream(data, complete=True) is None
    assert describe_pickle_stream(data * 4000, complete=False) is None  # a long file too


def test_random_bytes_are_not_pickles() -> None:
    # As the upload pipeline calls it: a whole short file, or the first window of a long one.
    rng = random.Random(20240518)
    for _ in range(1000):
        short = rng.randbytes(rng.randint(1, 2000))
        assert describe_pickle_stream(short, complete=True) is None, short[:16]
        window = rng.randbytes(PICKLE_SNIFF_BYTES)
        assert describe_pickle_stream(window, complete=False) is None, window[:16]


def test_a_global_import_is_enough() -> None:
    # GLOBAL, then a line that runs out: two opcodes, but one of them imports code.
    assert describe_pickle_stream(b"cos\nsystem\n(S'echo hi", complete=False) is not None
    assert describe_pickle_stream(b"cos\nsystem\n(S'echo hi'\ntR.", complete=True) is not None
