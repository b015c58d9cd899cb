"""Which weights a codec compresses: the linear projections, chosen by module name.

Names follow PEFT's `target_modules` rules so one pattern means the same thing to
deltahub and to peft: a list matches a module whose name equals an entry or ends with
"." + entry; a single string is a regular expression matched against the whole name.
Reports group modules the same way: by kind (the last part of the name, what a short
target names) and by layer (the number in `model.layers.<i>.`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from compress.errors import InvalidParameter
from compress.tensorio import Manifest

# Attention and MLP projections of Llama, Mistral, Qwen2 and their relatives.
DEFAULT_TARGET_MODULES: tuple[str, ...] = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
)

TargetSpec = str | Sequence[str]

# A layer index: a number between dots, as in "model.layers.12.mlp.up_proj".
_LAYER = re.compile(r"\.(\d+)\.")


def module_name(tensor_name: str) -> str:
    """The module a weight belongs to: "model.layers.0.mlp.up_proj.weight" -> "...up_proj"."""
    return tensor_name.removesuffix(".weight")


def owner_module(tensor_name: str) -> str:
    """The module any tensor belongs to: its name up to the last dot ("" at the top level)."""
    return tensor_name.rpartition(".")[0]


def module_kind(module: str) -> str:
    """The last part of a module name: "model.layers.0.self_attn.q_proj" -> "q_proj"."""
    return module.rsplit(".", 1)[-1]


def layer_index(name: str) -> int | None:
    """The layer a module or tensor belongs to ("model.layers.12.mlp.up_proj" -> 12)."""
    found = _LAYER.search(name)
    return int(found[1]) if found else None


def layer_pattern(name: str) -> str:
    """`name` with its layer indexes as `*`: "model.layers.*.input_layernorm.weight"."""
    return _LAYER.sub(".*.", name)


def matches(module: str, targets: TargetSpec) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def select_linear_weights(manifest: Manifest, targets: TargetSpec = DEFAULT_TARGET_MODULES
                          ) -> list[str]:
    """Names of the 2-D `<module>.weight` tensors whose module matches `targets`."""
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as exc:
            raise InvalidParameter(
                f"target pattern {targets!r} is not a valid regular expression: {exc}"
            ) from exc
    chosen = [
        spec.name for spec in manifest
        if spec.name.endswith(".weight") and len(spec.shape) == 2
        and matches(module_name(spec.name), targets)
    ]
    if not chosen:
        raise InvalidParameter(
            f"no 2-D linear weight matches the target modules {targets!r}; "
            "pass the module names of your architecture's projections"
        )
    return chosen
