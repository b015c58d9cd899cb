"""Checks of the PEFT types that adapt modules one by one (AdaLoRA, VeRA, IA³, LoHa,
LoKr, OFT): each type's tensor names, and their shapes against the base weight of the
module they adapt.

The names and shapes are those peft 0.22 writes (`get_peft_model_state_dict`, adapter
name stripped): `base_model.model.<module>.<part>`, and VeRA's shared projections as
`base_model.vera_A` / `base_model.vera_B`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import re2

from compress.errors import InvalidDelta
from compress.filenames import ADAPTER_CONFIG
from compress.lora.format import KEY_PREFIX, is_positive_int, pattern_value
from compress.peft.config import positive_int
from compress.tensorio import Manifest, TensorEntry

Shape = tuple[int, ...]
# part -> (expected shape, why): what one module's tensors must be.
Expected = dict[str, tuple[Shape, str]]

VERA_SHARED = ("base_model.vera_A", "base_model.vera_B")

_PARTS = {
    "ADALORA": ("lora_A", "lora_B", "lora_E"),
    "VERA": ("vera_lambda_b", "vera_lambda_d"),
    "IA3": ("ia3_l",),
    "LOHA": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
    "LOKR": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"),
    "OFT": ("oft_R.weight",),
}
MODULE_TYPES = tuple(_PARTS)
_KRONECKER = "lokr_w1 ⊗ lokr_w2"


@dataclass(frozen=True)
class Layer:
    """The base weight a module adapts: its name, and its features."""

    module: str
    out_features: int
    in_features: int


def split_key(peft_type: str, name: str) -> tuple[str, str] | None:
    """(module, part) of a key without its `base_model.model.` prefix, or None."""
    parts = "|".join(re.escape(p) for p in _PARTS[peft_type])
    match = re.fullmatch(rf"(?P<module>.+)\.(?P<part>{parts})", name)
    return (match["module"], match["part"]) if match else None


def base_layer(module: str, base: Manifest, fan_in_fan_out: bool,
               problems: list[str]) -> Layer | None:
    spec = base.get(f"{module}.weight")
    if spec is None:
        problems.append(f"module {module!r} has adapter tensors but the base has no "
                        f"{module + '.weight'!r}")
        return None
    if len(spec.shape) != 2:
        problems.append(f"module {module!r}: base weight is {list(spec.shape)}, not a matrix")
        return None
    out_features, in_features = spec.shape[::-1] if fan_in_fan_out else spec.shape
    return Layer(module, out_features, in_features)


def check_module(peft_type: str, layer: Layer, found: Mapping[str, TensorEntry],
                 raw: dict[str, Any], problems: list[str]) -> int | None:
    """Check one module's tensors; its rank (or 0 for a type without one) when they fit."""
    expected, rank = _EXPECTED[peft_type](layer, found, raw)
    ok = True
    if _KRONECKER in expected:  # no tensor of its own: the product of two
        problems.append(f"module {layer.module!r}: {expected.pop(_KRONECKER)[1]}")
        ok = False
    for part, (shape, why) in expected.items():
        entry = found.get(part)
        if entry is None:
            problems.append(f"module {layer.module!r} needs {part} ({peft_type})")
            ok = False
        elif entry.shape != shape:
            problems.append(f"{layer.module}.{part} is {list(entry.shape)}, expected "
                            f"{list(shape)} ({why})")
            ok = False
    unknown = set(found) - set(expected)
    if unknown:
        problems.append(f"module {layer.module!r} has unexpected tensors {sorted(unknown)} "
                        f"for {peft_type}")
        ok = False
    return rank if ok else None


def _adalora(layer: Layer, found: Mapping[str, TensorEntry],
             raw: dict[str, Any]) -> tuple[Expected, int]:
    rank = positive_int(raw, "init_r", 12)
    pattern = raw.get("rank_pattern")
    if pattern is not None:
        if not isinstance(pattern, dict):
            raise InvalidDelta(f"{ADAPTER_CONFIG}: rank_pattern must map lora_E names to "
                               "lists of booleans (AdaLoRA's kept ranks)")
        mask = pattern.get(f"{layer.module}.lora_E")
        if mask is not None:
            if not isinstance(mask, list) or not all(isinstance(m, bool) for m in mask):
                raise InvalidDelta(f"{ADAPTER_CONFIG}: rank_pattern[{layer.module}.lora_E] "
                                   "must be a list of booleans")
            rank = sum(mask)
    why = f"r={rank}"
    return {"lora_A": ((rank, layer.in_features), f"{why}, in={layer.in_features}"),
            "lora_B": ((layer.out_features, rank), f"out={layer.out_features}, {why}"),
            "lora_E": ((rank, 1), why)}, rank


def _vera(layer: Layer, found: Mapping[str, TensorEntry],
          raw: dict[str, Any]) -> tuple[Expected, int]:
    rank = positive_int(raw, "r", 256)
    return {"vera_lambda_b": ((layer.out_features,), f"out={layer.out_features}"),
            "vera_lambda_d": ((rank,), f"r={rank}")}, rank


def _ia3(layer: Layer, found: Mapping[str, TensorEntry],
         raw: dict[str, Any]) -> tuple[Expected, int]:
    if is_feedforward(layer.module, raw.get("feedforward_modules")):
        return {"ia3_l": ((1, layer.in_features),
                          f"a feed-forward module scales its input, in={layer.in_features}")}, 0
    return {"ia3_l": ((layer.out_features, 1),
                      f"an attention module scales its output, out={layer.out_features}")}, 0


def _loha(layer: Layer, found: Mapping[str, TensorEntry],
          raw: dict[str, Any]) -> tuple[Expected, int]:
    rank = _pattern_rank(raw, layer.module)
    out, in_ = layer.out_features, layer.in_features
    expected: Expected = {}
    for i in (1, 2):
        expected[f"hada_w{i}_a"] = ((out, rank), f"out={out}, r={rank}")
        expected[f"hada_w{i}_b"] = ((rank, in_), f"r={rank}, in={in_}")
    return expected, rank


def _oft(layer: Layer, found: Mapping[str, TensorEntry],
         raw: dict[str, Any]) -> tuple[Expected, int]:
    block = raw.get("oft_block_size") or 0
    r = raw.get("r") or 0
    if not (is_positive_int(block) or is_positive_int(r)):
        raise InvalidDelta(f"{ADAPTER_CONFIG}: OFT needs oft_block_size or r, a positive "
                           "integer")
    size = block if is_positive_int(block) else layer.in_features // r
    blocks = 1 if raw.get("block_share") else layer.in_features // max(size, 1)
    why = (f"in={layer.in_features} in blocks of {size}: {blocks} x {size}·{size - 1}/2 "
           "rotation parameters")
    if size < 1 or layer.in_features % size:
        why = f"in={layer.in_features} is no multiple of the block size {size}"
        blocks = 0
    return {"oft_R.weight": ((blocks, size * (size - 1) // 2), why)}, blocks


def _lokr(layer: Layer, found: Mapping[str, TensorEntry],
          raw: dict[str, Any]) -> tuple[Expected, int]:
    """LoKr: ΔW = w1 ⊗ w2, each whole or as a rank-r product (`_a` @ `_b`); the Kronecker
    product of [a, c] and [b, d] is [a·b, c·d] = [out, in]."""
    rank = _pattern_rank(raw, layer.module)
    factors: dict[str, tuple[int, int]] = {}
    expected: Expected = {}
    for w in ("lokr_w1", "lokr_w2"):
        if w in found:
            shape = found[w].shape
            factors[w] = (shape[0], shape[-1]) if len(shape) == 2 else (0, 0)
            expected[w] = (shape, "")
        else:
            left, right = found.get(f"{w}_a"), found.get(f"{w}_b")
            rows = left.shape[0] if left is not None and left.shape else 0
            cols = right.shape[-1] if right is not None and right.shape else 0
            factors[w] = (rows, cols)
            expected[f"{w}_a"] = ((rows, rank), f"r={rank}")
            expected[f"{w}_b"] = ((rank, cols), f"r={rank}")
    (a, c), (b, d) = factors["lokr_w1"], factors["lokr_w2"]
    if (a * b, c * d) != (layer.out_features, layer.in_features):
        expected[_KRONECKER] = ((a * b, c * d), (
            f"lokr_w1 ⊗ lokr_w2 is [{a}·{b}, {c}·{d}] = {[a * b, c * d]}, expected the base "
            f"weight's [out, in] = {[layer.out_features, layer.in_features]}"))
    return expected, rank


_EXPECTED: dict[str, Callable[[Layer, Mapping[str, TensorEntry], dict[str, Any]],
                              tuple[Expected, int]]] = {
    "ADALORA": _adalora, "VERA": _vera, "IA3": _ia3, "LOHA": _loha, "LOKR": _lokr,
    "OFT": _oft}


def _pattern_rank(raw: dict[str, Any], module: str) -> int:
    rank = positive_int(raw, "r", 8)
    pattern = raw.get("rank_pattern") or {}
    if not isinstance(pattern, dict):
        raise InvalidDelta(f"{ADAPTER_CONFIG}: rank_pattern must map names to ranks")
    value = pattern_value(pattern, module) if pattern else None
    if value is not None and not is_positive_int(value):
        raise InvalidDelta(f"{ADAPTER_CONFIG}: rank_pattern must map names to positive integers")
    return int(value) if value is not None else rank


def is_feedforward(module: str, feedforward: object) -> bool:
    """peft's rule: a regex matches the whole name; a list matches a name's end."""
    if isinstance(feedforward, str):
        try:
            return re2.fullmatch(feedforward, module) is not None
        except re2.error as exc:
            raise InvalidDelta(f"{ADAPTER_CONFIG}: feedforward_modules is not a regex RE2 "
                               "accepts") from exc
    if isinstance(feedforward, list):
        return any(isinstance(f, str) and module.endswith(f) for f in feedforward)
    return False


def check_vera_shared(tensors: Mapping[str, TensorEntry], layers: list[Layer],
                      raw: dict[str, Any], problems: list[str]) -> None:
    """VeRA's projections, shared by every module: vera_A [r, max in], vera_B [max out, r];
    left out (save_projection false) they are regrown from projection_prng_key."""
    a, b = (tensors.get(k) for k in VERA_SHARED)
    if a is None and b is None:
        if raw.get("save_projection", True):
            problems.append(f"{VERA_SHARED[0]} and {VERA_SHARED[1]} are missing, and "
                            "save_projection is true")
        elif not isinstance(raw.get("projection_prng_key"), int):
            problems.append("VeRA without saved projections needs an integer "
                            "projection_prng_key to regrow them")
        return
    if not layers:
        return
    rank = positive_int(raw, "r", 256)
    max_in = max(layer.in_features for layer in layers)
    max_out = max(layer.out_features for layer in layers)
    for key, entry, shape, why in ((VERA_SHARED[0], a, (rank, max_in), f"r={rank}, largest in"),
                                   (VERA_SHARED[1], b, (max_out, rank), f"largest out, r={rank}")):
        if entry is None:
            problems.append(f"{key} is missing beside the other projection")
        elif entry.shape != shape:
            problems.append(f"{key} is {list(entry.shape)}, expected {list(shape)} ({why} "
                            "of the adapted modules)")


def strip_prefix(key: str) -> str | None:
    return key[len(KEY_PREFIX):] if key.startswith(KEY_PREFIX) else None
