"""The PEFT LoRA adapter format, as `peft.save_pretrained` writes it.

`adapter_config.json` and `adapter_model.safetensors` (`base_model.model.<module>.lora_A.weight`
[r, in], `.lora_B.weight` [out, r]); `is_adapter_file` names them. The client's
`rank_pattern`/`alpha_pattern` keys run on RE2 (linear time), never on backtracking `re`.
See docs/codecs.md, "LoRA extraction".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import re2

from compress.errors import IncompatibleModels, InvalidDelta
from compress.filenames import ADAPTER_CONFIG as ADAPTER_CONFIG
from compress.filenames import ADAPTER_FILES as ADAPTER_FILES
from compress.filenames import ADAPTER_WEIGHTS as ADAPTER_WEIGHTS
from compress.filenames import is_adapter_file as is_adapter_file
from compress.tensorio import FLOAT_DTYPES, Manifest, TensorEntry

KEY_PREFIX = "base_model.model."

_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B"
    r"|lora_magnitude_vector)"
    r"(?P<suffix>\.weight|\.bias)?$"
)

_BASE_LAYER = re.compile(r"\.base_layer(?=\.[^.]+$)")

# Limits on client patterns. A key names a module or a family of modules (peft writes
# at most one per module); matching costs modules x keys, so the count is bounded too.
MAX_PATTERN_KEYS = 1024
MAX_PATTERN_KEY_CHARS = 256
# RE2 memory per compiled key: plenty for any key under the length limit, and a cap on
# what 2 x MAX_PATTERN_KEYS hostile keys can take. A DFA that outgrows it falls back to
# RE2's NFA (slower, still linear). log_errors off: a bad key is the client's problem,
# reported to the client, not a line in the server log.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 256 * 2**10
_RE2_OPTIONS.log_errors = False


def lora_key(module: str, part: str) -> str:
    """The safetensors key peft uses for `part` ("lora_A" or "lora_B") of `module`."""
    return f"{KEY_PREFIX}{module}.{part}.weight"


def saved_module_key(tensor_name: str) -> str:
    """The key of a full tensor kept through `modules_to_save` (e.g. `lm_head.weight`)."""
    return KEY_PREFIX + tensor_name


def compile_pattern_key(key: str) -> Any:
    r"""The RE2 regex peft builds from a pattern key: the key must match a suffix of the
    module name that starts after a dot (`(.*\.)?(key)$`, matched from the start).

    RE2's `$` is the end of the text; Python's also allows a final newline, which a
    module name never has.
    """
    try:
        return re2.compile(rf"(.*\.)?({key})$", _RE2_OPTIONS)
    except re2.error as exc:
        raise InvalidDelta(
            f"{ADAPTER_CONFIG}: pattern key {key!r} is not a valid regular expression for "
            f"RE2, the linear-time engine deltahub matches keys with ({_re2_reason(exc)}); "
            "write it without backreferences, lookaround or possessive quantifiers"
        ) from exc


def pattern_value(patterns: Mapping[str, Any], module: str) -> Any | None:
    """The value of the first `rank_pattern`/`alpha_pattern` key matching `module`, as peft does."""
    return _first_match(_compile_patterns(patterns), module)


def _compile_patterns(patterns: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    return [(compile_pattern_key(key), value) for key, value in patterns.items()]


def _first_match(compiled: list[tuple[Any, Any]], module: str) -> Any | None:
    for regex, value in compiled:
        if regex.match(module) is not None:
            return value
    return None


def _re2_reason(exc: Exception) -> str:
    # pybind passes RE2's message as bytes: "missing ): <the whole pattern>".
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return text.split(": ", 1)[0]


@dataclass(frozen=True)
class LoraAdapterConfig:
    r: int
    lora_alpha: float
    target_modules: list[str] | str
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    modules_to_save: list[str] = field(default_factory=list)
    fan_in_fan_out: bool = False
    lora_bias: bool = False

    def rank_of(self, module: str) -> int:
        value = _first_match(self._rank_regexes, module)
        return int(value) if value is not None else self.r

    def alpha_of(self, module: str) -> float:
        value = _first_match(self._alpha_regexes, module)
        return float(value) if value is not None else self.lora_alpha

    # Compiled once per config: rank_of runs once per module of the adapter.
    @cached_property
    def _rank_regexes(self) -> list[tuple[Any, Any]]:
        return _compile_patterns(self.rank_pattern)

    @cached_property
    def _alpha_regexes(self) -> list[tuple[Any, Any]]:
        return _compile_patterns(self.alpha_pattern)


@dataclass(frozen=True)
class LoraAdapterSummary:
    r: int
    lora_alpha: float
    target_modules: list[str] | str
    ranks: dict[str, int]  # adapted module -> its rank
    saved_tensors: list[str]  # full tensors carried by the adapter (modules_to_save, biases)
    parameter_count: int

    def to_params(self) -> dict[str, Any]:
        distinct = sorted(set(self.ranks.values()))
        return {"r": self.r, "lora_alpha": self.lora_alpha,
                "target_modules": self.target_modules, "ranks": distinct,
                "module_count": len(self.ranks), "saved_tensors": self.saved_tensors,
                "parameter_count": self.parameter_count}


def parse_adapter_config(raw: Any) -> LoraAdapterConfig:
    """Check the fields of an `adapter_config.json` that deltahub relies on."""
    if not isinstance(raw, dict):
        raise InvalidDelta(f"{ADAPTER_CONFIG} must hold a JSON object")
    peft_type = raw.get("peft_type")
    if peft_type != "LORA":
        raise InvalidDelta(
            f"{ADAPTER_CONFIG} has peft_type {peft_type!r}; deltahub registers LoRA adapters "
            "(peft_type \"LORA\") as kind lora, and every other PEFT type as kind peft"
        )
    r, alpha, targets = raw.get("r"), raw.get("lora_alpha"), raw.get("target_modules")
    if not isinstance(r, int) or not is_positive_int(r):
        raise InvalidDelta(f"{ADAPTER_CONFIG}: r must be a positive integer, got {r!r}")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        raise InvalidDelta(f"{ADAPTER_CONFIG}: lora_alpha must be a positive number, got {alpha!r}")
    if not (isinstance(targets, str) or (isinstance(targets, list)
                                         and all(isinstance(t, str) for t in targets))):
        raise InvalidDelta(f"{ADAPTER_CONFIG}: target_modules must be a list of names or a regex")
    rank_pattern = raw.get("rank_pattern") or {}
    alpha_pattern = raw.get("alpha_pattern") or {}
    if not isinstance(rank_pattern, dict) or not all(is_positive_int(v)
                                                     for v in rank_pattern.values()):
        raise InvalidDelta(f"{ADAPTER_CONFIG}: rank_pattern must map names to positive integers")
    if not isinstance(alpha_pattern, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in alpha_pattern.values()):
        raise InvalidDelta(f"{ADAPTER_CONFIG}: alpha_pattern must map names to numbers")
    _check_pattern_keys("rank_pattern", rank_pattern)
    _check_pattern_keys("alpha_pattern", alpha_pattern)
    modules_to_save = raw.get("modules_to_save") or []
    if not isinstance(modules_to_save, list):
        raise InvalidDelta(f"{ADAPTER_CONFIG}: modules_to_save must be a list of names")
    return LoraAdapterConfig(
        r=int(r), lora_alpha=float(alpha), target_modules=targets, rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern, modules_to_save=modules_to_save,
        fan_in_fan_out=bool(raw.get("fan_in_fan_out")), lora_bias=bool(raw.get("lora_bias")),
    )


def _check_pattern_keys(field_name: str, patterns: Mapping[str, Any]) -> None:
    """Refuse too many keys, too long keys, and keys RE2 cannot compile."""
    if len(patterns) > MAX_PATTERN_KEYS:
        raise InvalidDelta(
            f"{ADAPTER_CONFIG}: {field_name} has {len(patterns)} keys, over the limit of "
            f"{MAX_PATTERN_KEYS}; give modules that share a value one regex key "
            "(e.g. \"layers\\.\\d+\\.mlp\\.down_proj\") instead of a key each")
    for key in patterns:
        if len(key) > MAX_PATTERN_KEY_CHARS:
            raise InvalidDelta(
                f"{ADAPTER_CONFIG}: {field_name} key {key[:40]!r}... is {len(key)} characters, "
                f"over the limit of {MAX_PATTERN_KEY_CHARS}; a key only has to match the end "
                "of a module name, so shorten it")
        compile_pattern_key(key)


def check_lora_against_base(config: LoraAdapterConfig, tensors: Mapping[str, TensorEntry],
                            base: Manifest, dora: bool = False) -> LoraAdapterSummary:
    """Check every adapter tensor against the base manifest; name each mismatch.

    For each adapted module: `<module>.weight` exists in the base and is 2-D [out, in];
    lora_A is [r, in], lora_B is [out, r], with r the rank the config gives the module;
    with `dora` (use_dora), lora_magnitude_vector is [out].
    """
    problems: list[str] = []
    parts: dict[str, dict[str, TensorEntry]] = {}
    saved: list[str] = []
    for key, entry in sorted(tensors.items()):
        if not key.startswith(KEY_PREFIX):
            problems.append(f"{key!r} does not start with {KEY_PREFIX!r} (not a peft key)")
            continue
        if entry.dtype not in FLOAT_DTYPES:
            problems.append(f"{key!r} has dtype {entry.dtype}; adapter weights must be floats")
            continue
        name = key[len(KEY_PREFIX):]
        match = _LORA_KEY.match(name)
        if match is None:
            # peft saves the base weight of a LoRA-wrapped layer under `<module>.base_layer.`
            # (embeddings when embed_tokens is targeted, biases with bias="all").
            name = _BASE_LAYER.sub("", name)
            _check_saved_tensor(name, entry, base, problems)
            saved.append(name)
            continue
        part = match["part"] + (match["suffix"] or "")
        parts.setdefault(match["module"], {})[part] = entry
    ranks = {module: rank for module, found in sorted(parts.items())
             if (rank := _check_module(module, found, config, base, problems, dora)) is not None}
    if problems:
        raise IncompatibleModels("the LoRA adapter", problems)
    if not ranks:
        raise InvalidDelta(f"{ADAPTER_WEIGHTS} has no lora_A/lora_B tensors")
    return LoraAdapterSummary(
        r=config.r, lora_alpha=config.lora_alpha, target_modules=config.target_modules,
        ranks=ranks, saved_tensors=saved,
        parameter_count=sum(e.numel for e in tensors.values()),
    )


def _check_saved_tensor(name: str, entry: TensorEntry, base: Manifest,
                        problems: list[str]) -> None:
    spec = base.get(name)
    if spec is None:
        problems.append(f"{name!r} is neither a LoRA factor nor a tensor of the base")
    elif spec.shape != entry.shape:
        problems.append(f"{name!r} has shape {list(entry.shape)}, base has {list(spec.shape)}")


def _check_module(module: str, found: Mapping[str, TensorEntry], config: LoraAdapterConfig,
                  base: Manifest, problems: list[str], dora: bool = False) -> int | None:
    spec = base.get(f"{module}.weight")
    if spec is None:
        problems.append(f"module {module!r} has LoRA factors but the base has no "
                        f"{module + '.weight'!r}")
        return None
    if len(spec.shape) != 2:
        problems.append(f"module {module!r}: base weight is {list(spec.shape)}, not a matrix")
        return None
    embedding = any(p.startswith("lora_embedding") for p in found)
    a_name, b_name = ("lora_embedding_A", "lora_embedding_B") if embedding else (
        "lora_A.weight", "lora_B.weight")
    a, b = found.get(a_name), found.get(b_name)
    if a is None or b is None:
        problems.append(f"module {module!r} needs both {a_name} and {b_name}")
        return None
    if embedding:
        in_features, out_features = spec.shape  # nn.Embedding is [num_embeddings, dim]
    elif config.fan_in_fan_out:
        in_features, out_features = spec.shape  # Conv1D stores [in, out]
    else:
        out_features, in_features = spec.shape
    rank = config.rank_of(module)
    ok = True
    if a.shape != (rank, in_features):
        problems.append(f"{module}.{a_name} is {list(a.shape)}, expected {[rank, in_features]} "
                        f"(r={rank}, in={in_features})")
        ok = False
    if b.shape != (out_features, rank):
        problems.append(f"{module}.{b_name} is {list(b.shape)}, expected "
                        f"{[out_features, rank]} (out={out_features}, r={rank})")
        ok = False
    bias = found.get("lora_B.bias")
    if bias is not None and bias.shape != (out_features,):
        problems.append(f"{module}.lora_B.bias is {list(bias.shape)}, expected [{out_features}]")
        ok = False
    ok = _check_magnitude(module, found.get(_MAGNITUDE), out_features, dora, problems) and ok
    unknown = set(found) - {a_name, b_name, "lora_B.bias", _MAGNITUDE}
    if unknown:
        problems.append(f"module {module!r} has unexpected tensors {sorted(unknown)}")
        ok = False
    return rank if ok else None


_MAGNITUDE = "lora_magnitude_vector"  # DoRA's per-output-row norm, [out]


def _check_magnitude(module: str, entry: TensorEntry | None, out_features: int, dora: bool,
                     problems: list[str]) -> bool:
    if entry is None and dora:
        problems.append(f"module {module!r} needs {_MAGNITUDE} (use_dora is true)")
        return False
    if entry is not None and not dora:
        problems.append(f"{module}.{_MAGNITUDE} is a DoRA tensor, but use_dora is false")
        return False
    if entry is not None and entry.shape != (out_features,):
        problems.append(f"{module}.{_MAGNITUDE} is {list(entry.shape)}, expected "
                        f"[{out_features}] (DoRA magnitude, out={out_features})")
        return False
    return True


def is_positive_int(value: object) -> bool:
    """An int above 0, and not a bool (JSON true is no rank)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
