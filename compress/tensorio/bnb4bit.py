"""bitsandbytes 4-bit checkpoints (NF4 / FP4, double quantized or not), in pure torch.

transformers saves each quantized Linear weight `<m>.weight` as packed nibbles (U8,
[ceil(numel/2), 1]) beside `<m>.weight.absmax` (F32 [blocks], or U8 [blocks] quantized
again with `nested_absmax` F32 and `nested_quant_map` F32 [256] under double quant),
`<m>.weight.quant_map` (F32 [16]) and `<m>.weight.quant_state.bitsandbytes__nf4|fp4`
(U8 bytes of JSON: logical shape and dtype, blocksize, nested stats). The checkpoint is
read through its LOGICAL manifest: one tensor per weight, with the shape and dtype it
had before quantization, dequantized on read. bitsandbytes is never imported here: the
dequantizer below is checked bit for bit against it in tests/compress/tensorio/.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import torch

from compress.errors import InvalidModel
from compress.tensorio.header import TORCH_DTYPES
from compress.tensorio.manifest import Manifest, TensorSpec

QUANT_STATE = ".quant_state.bitsandbytes__"
QUANT_TYPES = ("nf4", "fp4")
# The aux tensors a quantized weight `<m>.weight` brings, by suffix.
AUX_SUFFIXES = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map")
NESTED_CODE_SIZE = 256  # the 8-bit dynamic map that quantizes absmax again
_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}
_MAX_QUANT_STATE_BYTES = 4096  # the JSON is ~170 bytes; anything far larger is not it


@dataclass(frozen=True)
class Quantization:
    """What config.json's `quantization_config` says, as the registry records it."""

    quant_type: str
    double_quant: bool
    compute_dtype: str | None

    def to_dict(self, blocksize: int | None) -> dict[str, Any]:
        return {"method": "bitsandbytes-4bit", "quant_type": self.quant_type,
                "double_quant": self.double_quant, "blocksize": blocksize,
                "compute_dtype": self.compute_dtype}


@dataclass(frozen=True)
class QuantState:
    """One weight's quant_state JSON, checked."""

    quant_type: str
    blocksize: int
    dtype: str  # safetensors name of the logical dtype
    shape: tuple[int, ...]
    nested_blocksize: int | None = None
    nested_offset: float | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def blocks(self) -> int:
        return -(-self.numel // self.blocksize)


@dataclass(frozen=True)
class QuantizedWeight:
    name: str  # the logical name, `<m>.weight`: also the packed tensor's name
    state_name: str
    state: QuantState

    def aux(self, suffix: str) -> str:
        return self.name + suffix


def quantization_of(config: Mapping[str, Any] | None) -> Quantization | None:
    """The 4-bit quantization config.json declares, None for an unquantized model.

    Other quantization methods (8-bit, GPTQ, AWQ) are refused: their packed tensors would
    otherwise pass for weights of the wrong shape.
    """
    raw = (config or {}).get("quantization_config")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidModel("config.json: quantization_config must be an object")
    method = raw.get("quant_method", "bitsandbytes")
    if method != "bitsandbytes" or raw.get("load_in_4bit") is not True:
        raise InvalidModel(
            f"config.json: quantization_config is {method!r} "
            f"{'8-bit' if raw.get('load_in_8bit') else 'without load_in_4bit'}; deltahub "
            "takes bitsandbytes 4-bit checkpoints only (load_in_4bit, nf4 or fp4): push "
            "the full-precision weights otherwise")
    quant_type = raw.get("bnb_4bit_quant_type", "fp4")
    if quant_type not in QUANT_TYPES:
        raise InvalidModel(f"config.json: bnb_4bit_quant_type {quant_type!r} is none of "
                           f"{', '.join(QUANT_TYPES)}")
    double = raw.get("bnb_4bit_use_double_quant", False)
    compute = raw.get("bnb_4bit_compute_dtype")
    if not isinstance(double, bool) or not (compute is None or isinstance(compute, str)):
        raise InvalidModel("config.json: bnb_4bit_use_double_quant must be true or false "
                           "and bnb_4bit_compute_dtype a dtype name")
    return Quantization(quant_type, double, compute)


def declared_quantization(stored: Manifest, config: Mapping[str, Any] | None
                          ) -> Quantization | None:
    """`quantization_of(config)`, refusing quant_state tensors that config.json does not
    declare (their packed weights would pass for weights of the wrong shape)."""
    quantization = quantization_of(config)
    if quantization is None:
        states = [s.name for s in stored if QUANT_STATE in s.name]
        if states:
            raise InvalidModel(
                f"tensor {states[0]!r} is a bitsandbytes 4-bit quant_state, but config.json "
                "has no quantization_config; push config.json as transformers saved it with "
                "the 4-bit model")
    return quantization


def parse_quant_state(raw: bytes, where: str) -> QuantState:
    """A quant_state tensor's bytes, as JSON, checked field by field."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{where}: the quant_state is not valid JSON ({exc}); re-save "
                           "the checkpoint with transformers") from exc
    if not isinstance(data, dict):
        raise InvalidModel(f"{where}: the quant_state must be a JSON object")
    shape, blocksize = data.get("shape"), data.get("blocksize")
    if (not isinstance(shape, list) or not shape
            or not all(_positive(d) for d in shape) or not _positive(blocksize)):
        raise InvalidModel(f"{where}: the quant_state needs 'shape' (positive sizes) and a "
                           "positive 'blocksize'")
    if data.get("quant_type") not in QUANT_TYPES or data.get("dtype") not in _DTYPES:
        raise InvalidModel(f"{where}: the quant_state's quant_type must be one of "
                           f"{', '.join(QUANT_TYPES)} and dtype one of {', '.join(_DTYPES)}")
    nested = "nested_blocksize" in data
    if nested and (not _positive(data["nested_blocksize"])
                   or not isinstance(data.get("nested_offset"), int | float)
                   or not math.isfinite(data["nested_offset"])):
        raise InvalidModel(f"{where}: a double-quantized quant_state needs a positive "
                           "'nested_blocksize' and a finite 'nested_offset'")
    return QuantState(data["quant_type"], blocksize, _DTYPES[data["dtype"]], tuple(shape),
                      data["nested_blocksize"] if nested else None,
                      float(data["nested_offset"]) if nested else None)


def _positive(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


# Reads the bytes of one tensor of the stored manifest (quant_state JSON only: small).
TensorBytes = Callable[[TensorSpec], bytes]


def quantized_weights(stored: Manifest, quantization: Quantization, read: TensorBytes,
                      config: Mapping[str, Any] | None = None) -> dict[str, QuantizedWeight]:
    """Every quantized weight of `stored`, validated from its header entries and its
    quant_state JSON alone; raises InvalidModel naming each problem."""
    weights: dict[str, QuantizedWeight] = {}
    problems: list[str] = []
    sizes = _config_sizes(config or {})
    for spec in stored:
        if QUANT_STATE not in spec.name:
            continue
        name, _, suffix = spec.name.partition(QUANT_STATE)
        if spec.dtype != "U8" or len(spec.shape) != 1 or spec.shape[0] > _MAX_QUANT_STATE_BYTES:
            problems.append(f"{spec.name!r} must be a U8 vector of JSON bytes")
            continue
        state = parse_quant_state(read(spec), repr(spec.name))
        weight = QuantizedWeight(name, spec.name, state)
        problems += _check_weight(stored, weight, quantization, suffix, sizes)
        weights[name] = weight
    if not weights:
        problems.append("config.json declares 4-bit quantization but no tensor has a "
                        f"'*{QUANT_STATE}*' quant_state")
    if problems:
        raise InvalidModel("the bitsandbytes 4-bit checkpoint is malformed: "
                           + "; ".join(problems[:20]))
    return weights


def _check_weight(stored: Manifest, weight: QuantizedWeight, quantization: Quantization,
                  suffix: str, sizes: set[int]) -> list[str]:
    state, name = weight.state, weight.name
    problems: list[str] = []
    if suffix != state.quant_type or state.quant_type != quantization.quant_type:
        problems.append(f"{weight.state_name!r} holds {state.quant_type} but config.json "
                        f"says {quantization.quant_type}")
    if (state.nested_blocksize is not None) != quantization.double_quant:
        problems.append(f"{name!r}: double quant is "
                        f"{'on' if state.nested_blocksize else 'off'} in its quant_state "
                        f"but {'on' if quantization.double_quant else 'off'} in config.json")
    if sizes and state.shape[-1] not in sizes:
        problems.append(f"{name!r} has logical shape {list(state.shape)}, whose input size "
                        f"{state.shape[-1]} is none of config.json's sizes {sorted(sizes)}")
    expected: dict[str, tuple[str, int]] = {"": ("U8", -(-state.numel // 2)),
                                            ".quant_map": ("F32", 16)}
    if state.nested_blocksize is None:
        expected[".absmax"] = ("F32", state.blocks)
    else:
        expected[".absmax"] = ("U8", state.blocks)
        expected[".nested_absmax"] = ("F32", -(-state.blocks // state.nested_blocksize))
        expected[".nested_quant_map"] = ("F32", NESTED_CODE_SIZE)
    for aux, (dtype, count) in expected.items():
        spec = stored.get(name + aux)
        if spec is None:
            problems.append(f"missing tensor {name + aux!r} ({dtype}, {count} values)")
        elif spec.dtype != dtype or spec.numel != count:
            what = "packed weight" if not aux else f"{aux[1:]}"
            problems.append(f"{name + aux!r} ({what}) is {spec.dtype} {list(spec.shape)}; "
                            f"logical shape {list(state.shape)} with blocksize "
                            f"{state.blocksize} needs {dtype} with {count} values")
    return problems


def _config_sizes(config: Mapping[str, Any]) -> set[int]:
    """The input sizes a Linear of this architecture may have, from config.json."""
    sizes = {v for k, v in config.items() if k.endswith(("hidden_size", "intermediate_size"))
             and _positive(v)}
    heads, head_dim = config.get("num_attention_heads"), config.get("head_dim")
    if _positive(heads) and _positive(head_dim):
        sizes.add(heads * head_dim)
    return sizes


def logical_manifest(stored: Manifest, weights: Mapping[str, QuantizedWeight]) -> Manifest:
    """`stored` as the model it was quantized from: each packed weight with its logical
    dtype and shape, the aux tensors left out."""
    hidden = {w.state_name for w in weights.values()}
    hidden |= {w.aux(s) for w in weights.values() for s in AUX_SUFFIXES}
    specs = []
    for spec in stored:
        weight = weights.get(spec.name)
        if weight is not None:
            specs.append(TensorSpec(spec.name, weight.state.dtype, weight.state.shape,
                                    spec.file))
        elif spec.name not in hidden:
            specs.append(spec)
    return Manifest(specs)


def dequantize(weight: QuantizedWeight, read: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """The logical tensor of `weight`, its aux tensors read by name with `read`."""
    state = weight.state
    absmax = read(weight.aux(".absmax"))
    if state.nested_blocksize is not None:
        assert state.nested_offset is not None
        absmax = dequantize_absmax(absmax, read(weight.aux(".nested_absmax")),
                                   read(weight.aux(".nested_quant_map")),
                                   state.nested_blocksize, state.nested_offset)
    return dequantize_4bit(read(weight.name), absmax, read(weight.aux(".quant_map")),
                           state.blocksize, state.shape, TORCH_DTYPES[state.dtype])


def dequantize_absmax(codes: torch.Tensor, nested_absmax: torch.Tensor,
                      nested_map: torch.Tensor, nested_blocksize: int,
                      offset: float) -> torch.Tensor:
    """Double quant's absmax in float32: code[byte] · nested_absmax[block] + offset, as
    bitsandbytes computes it (the offset added after, in float32)."""
    values = nested_map.float()[codes.reshape(-1).long()]
    scaled = _blockwise(values, nested_absmax.float(), nested_blocksize)
    return scaled + torch.tensor(offset, dtype=torch.float32)


def dequantize_4bit(packed: torch.Tensor, absmax: torch.Tensor, quant_map: torch.Tensor,
                    blocksize: int, shape: tuple[int, ...], dtype: torch.dtype
                    ) -> torch.Tensor:
    """Unpack nibbles (high nibble first), look each up in `quant_map` and scale by its
    block's absmax in float32, then round once to `dtype`: bitsandbytes' arithmetic."""
    numel = math.prod(shape)
    flat = packed.reshape(-1).view(torch.uint8)
    nibbles = torch.stack([flat >> 4, flat & 0xF], dim=1).reshape(-1)[:numel].long()
    values = _blockwise(quant_map.float()[nibbles], absmax.float(), blocksize)
    return values.to(dtype).reshape(shape)


def _blockwise(values: torch.Tensor, scales: torch.Tensor, blocksize: int) -> torch.Tensor:
    numel = values.numel()
    full = numel - numel % blocksize
    out = torch.empty(numel, dtype=torch.float32)
    out[:full] = (values[:full].view(-1, blocksize)
                  * scales[: full // blocksize].view(-1, 1)).reshape(-1)
    if full < numel:
        out[full:] = values[full:] * scales[full // blocksize]
    return out
