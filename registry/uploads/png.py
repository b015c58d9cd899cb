"""Check that a pushed picture is a well-formed PNG, without decoding it.

Codecs write plots (LoRA's `spectra.png`) that users push with their adapters, and
browsers later show them. The server never decodes an image (a decoder is a large attack
surface); it checks the container instead: the signature, IHDR first with a non-empty
size, every chunk's length and CRC, IEND last and nothing after it. That refuses
anything that is not a PNG, or a truncated or corrupted one, and costs one CRC pass.
"""

from __future__ import annotations

import struct
import zlib

from registry.errors import Unprocessable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_LENGTH = 13
_MAX_CHUNK_LENGTH = 2**31 - 1  # the PNG specification's limit
_CHUNK_OVERHEAD = 12  # length, type, CRC


def check_png_start(head: bytes, filename: str) -> None:
    """Refuse as soon as the first bytes show the file is no PNG."""
    if not PNG_SIGNATURE.startswith(head[: len(PNG_SIGNATURE)]):
        raise _invalid(filename, "it does not start with the PNG signature")


def check_png(data: bytes, filename: str) -> None:
    """Walk the chunks of a whole PNG file; raise Unprocessable at the first fault."""
    if not data.startswith(PNG_SIGNATURE):
        raise _invalid(filename, "it does not start with the PNG signature")
    position, first = len(PNG_SIGNATURE), True
    while True:
        if len(data) - position < _CHUNK_OVERHEAD:
            raise _invalid(filename, f"it ends at byte {len(data)} before its IEND chunk "
                                     "(truncated)")
        length, kind = struct.unpack_from(">I4s", data, position)
        body_at = position + 8
        if length > _MAX_CHUNK_LENGTH or body_at + length + 4 > len(data):
            raise _invalid(filename, f"the chunk at byte {position} runs past the end")
        if not kind.isalpha():
            raise _invalid(filename, f"the chunk at byte {position} has no valid type")
        body = data[body_at: body_at + length]
        (crc,) = struct.unpack_from(">I", data, body_at + length)
        if zlib.crc32(kind + body) != crc:
            raise _invalid(filename, f"the {kind.decode()} chunk at byte {position} fails "
                                     "its CRC (corrupted)")
        if first:
            _check_header(kind, body, filename)
            first = False
        position = body_at + length + 4
        if kind == b"IEND":
            break
    if position != len(data):
        raise _invalid(filename, f"{len(data) - position} bytes follow its IEND chunk")


def _check_header(kind: bytes, body: bytes, filename: str) -> None:
    if kind != b"IHDR" or len(body) != _IHDR_LENGTH:
        raise _invalid(filename, "its first chunk is not a 13-byte IHDR")
    width, height = struct.unpack_from(">II", body)
    if width == 0 or height == 0:
        raise _invalid(filename, f"it is {width}x{height} pixels")


def _invalid(filename: str, why: str) -> Unprocessable:
    return Unprocessable(f"{filename!r} is not a valid PNG picture: {why}; push the PNG the "
                         "codec wrote, unchanged", name="InvalidContent")
