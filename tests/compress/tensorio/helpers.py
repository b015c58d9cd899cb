"""What the tensorio tests share: a file written from bytes, a model held in memory, and a
tokenizer.model that is not a pickle."""

from __future__ import annotations

import struct
from pathlib import Path

from compress.errors import InvalidModel


def write(tmp_path: Path, data: bytes, name: str = "model.safetensors") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


class MemorySource:
    """A model held as bytes in memory; records every positioned read."""

    def __init__(self, name: str, files: dict[str, bytes]) -> None:
        self.name = name
        self._files = files
        self.reads: list[tuple[str, int, int]] = []
        self.closed = 0

    @classmethod
    def of(cls, directory: Path) -> MemorySource:
        return cls(f"memory copy of {directory.name}",
                   {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()})

    def files(self) -> list[str]:
        return sorted(self._files)

    def size(self, file: str) -> int:
        return len(self._files[file])

    def read_into(self, file: str, offset: int, buffer: memoryview) -> None:
        self.reads.append((file, offset, len(buffer)))
        data = self._files[file][offset:offset + len(buffer)]
        if len(data) < len(buffer):
            raise InvalidModel(f"{file}: short read")
        buffer[:] = data

    def read_bytes(self, file: str) -> bytes:
        return self._files[file]

    def close(self) -> None:
        self.closed += 1


def sentencepiece_model_bytes() -> bytes:
    """A small tokenizer.model as sentencepiece writes it: a ModelProto protobuf."""

    def field(number: int, wire_type: int, payload: bytes) -> bytes:
        return bytes([number << 3 | wire_type]) + payload

    def length_delimited(number: int, payload: bytes) -> bytes:
        assert len(payload) < 128  # one-byte varint length is all this needs
        return field(number, 2, bytes([len(payload)]) + payload)

    pieces = b"".join(
        length_delimited(1, length_delimited(1, text.encode()) + field(2, 5, struct.pack(
            "<f", -float(i))) + field(3, 0, bytes([kind])))
        for i, (text, kind) in enumerate([("<unk>", 2), ("<s>", 3), ("</s>", 3), ("\u2581the", 1),
                                          ("\u2581a", 1), ("s", 1), ("(", 1), (".", 1)]))
    trainer = length_delimited(2, field(3, 0, bytes([1])) + field(4, 0, bytes([8])))
    return pieces + trainer + length_delimited(3, length_delimited(1, b"nmt_nfkc"))
