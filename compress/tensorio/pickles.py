"""Pickle checkpoints, recognised by name or by their first bytes, and refused.

Pickle-based checkpoints (`torch.save`, `.bin`, `.pt`, NumPy `.npy`) can run arbitrary
code when loaded, so deltahub never unpickles anything. Protocols 2 and up, zip archives
and `.npy` files start with magic bytes; protocols 0 and 1 have none, so their opcodes
are followed (never run) to tell them from text, JSON and protobuf.
"""

from __future__ import annotations

import io
import pickletools

from compress.errors import PickleRefused

# How much of a file is read as pickle opcodes when looking for a protocol 0 or 1 pickle,
# and how many opcodes it takes to count as one, unless one of them imports a global:
# "N." is a pickle of None, and a text may well start with "N.B.". With 4, 3 of 100,000
# random byte strings read as pickles (a sentencepiece model, the one binary file kind
# accepted, starts with 0x0a, which is no opcode).
PICKLE_SNIFF_BYTES = 64 * 2**10
_MIN_PICKLE_OPCODES = 4
_IMPORTS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST"})
_PICKLE_0_1 = "a Python pickle (protocol 0 or 1: pickle opcodes from the first byte)"

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def describe_pickle(prefix: bytes) -> str | None:
    """Name the pickle-based format `prefix` starts with, or None if it looks like none."""
    if len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
        return f"a Python pickle (protocol {prefix[1]})"
    if prefix.startswith(b"PK\x03\x04"):
        return "a zip archive (the format of torch.save, which holds a pickle)"
    if prefix.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file (which may hold a pickle)"
    return None


def describe_pickle_stream(head: bytes, complete: bool) -> str | None:
    """Name a protocol 0 or 1 pickle (no magic bytes) that `head` starts with, or None.

    `head` is the start of a file (at most PICKLE_SNIFF_BYTES), `complete` whether it is
    the whole file. The bytes are decoded as pickle opcodes and their effect on the
    unpickler's stack is followed, but nothing is ever built or run. They are a pickle if
    they reach a STOP, or the end of an incomplete `head`, without a stack error, through
    a few opcodes or one that imports a global. Text, JSON and protobuf fail within their
    first bytes.
    """
    stream = io.BytesIO(head)
    stack = _OpcodeStack()
    try:
        for opcode, _arg, _pos in pickletools.genops(stream):
            if not stack.apply(opcode):
                return None  # no unpickler would get past this opcode
    except Exception:  # genops raises ValueError on garbage; any failure means "not opcodes"
        # Running out of bytes in the middle of an opcode says nothing against a pickle
        # that goes on past the part we read.
        ran_out = not complete and stream.tell() >= len(head)
        return _PICKLE_0_1 if ran_out and stack.looks_like_a_pickle() else None
    return _PICKLE_0_1 if stack.looks_like_a_pickle() else None


class _OpcodeStack:
    """The unpickler's stack as opcodes see it: items and marks, no values.

    Follows pickletools.dis, minus its memo checks (the unpickler does not make them).
    """

    def __init__(self) -> None:
        self.items: list[bool] = []  # True: a mark
        self.marks = 0
        self.count = 0  # opcodes applied
        self.imports = False  # whether one of them imports a global (code to run)

    def looks_like_a_pickle(self) -> bool:
        return self.imports or self.count >= _MIN_PICKLE_OPCODES

    def apply(self, opcode: pickletools.OpcodeInfo) -> bool:
        """Apply one opcode's stack effect; False if the unpickler would fail on it."""
        before, after = opcode.stack_before, opcode.stack_after
        to_pop = len(before)
        pops_mark = pickletools.markobject in before or (
            opcode.name == "POP" and bool(self.items) and self.items[-1])
        if pops_mark:
            if not self.marks:
                return False
            while not self.items.pop():  # everything down to and including the mark
                pass
            self.marks -= 1
            to_pop = (before.index(pickletools.markobject)
                      if pickletools.markobject in before else 0)
        if len(self.items) < to_pop:
            return False
        del self.items[len(self.items) - to_pop:]
        pushed = [item is pickletools.markobject for item in after]
        self.items += pushed
        self.marks += sum(pushed)
        self.count += 1
        self.imports = self.imports or opcode.name in _IMPORTS
        return True


def pickle_refusal(name: str, what: str) -> PickleRefused:
    return PickleRefused(
        f"{name!r} is {what}; pickle checkpoints can run arbitrary code and are never "
        "loaded. Convert it to safetensors (e.g. `safetensors.torch.save_file` or "
        "`model.save_pretrained(dir, safe_serialization=True)`) and upload that instead"
    )


def refuse_pickle_name(name: str) -> None:
    """Refuse files whose name says pickle, before reading a byte of them."""
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise pickle_refusal(name, "named like a pickle checkpoint")
