"""A runnable causal LM from a config.json and a stream of weights.

transformers builds the architecture (imported lazily, without initialising weights);
deltahub's own readers fill it tensor by tensor, never `from_pretrained`, so pickles stay
refused and peak memory is one model. Custom code (`auto_map`) is refused.
See docs/codecs.md, "Quality evaluation and shared model code".
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import torch

from compress.errors import InvalidModel, MissingDependency

_SHOWN_PROBLEMS = 10


def transformers_module() -> ModuleType:
    """transformers, or a MissingDependency naming the extra to install."""
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:
        raise MissingDependency("transformers", exc) from exc


def causal_lm_config(config: Mapping[str, Any] | None, source: str) -> Any:
    """The transformers config object for a model's config.json (a dict)."""
    if config is None:
        raise InvalidModel(f"{source} has no config.json; evaluation needs it to build the "
                           "model's architecture")
    if "auto_map" in config:
        raise InvalidModel(f"{source}: config.json asks for custom model code (auto_map); "
                           "deltahub runs only architectures built into transformers")
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise InvalidModel(f"{source}: config.json has no model_type; save it with "
                           "save_pretrained, which records the architecture")
    transformers = transformers_module()
    try:
        config_class = transformers.CONFIG_MAPPING[model_type]
    except KeyError as exc:
        raise InvalidModel(f"{source}: model_type {model_type!r} is not an architecture "
                           f"transformers {transformers.__version__} knows; upgrade "
                           "transformers or evaluate another model") from exc
    # A 4-bit base's tensors arrive dequantized (tensorio/bnb4bit.py): its architecture
    # is the plain one, never quantized again.
    plain = {k: v for k, v in config.items() if k != "quantization_config"}
    try:
        return config_class.from_dict(plain)
    except (TypeError, ValueError) as exc:
        raise InvalidModel(f"{source}: config.json does not make a {model_type} config "
                           f"({exc})") from exc


def build_model(config: Any, tensors: Iterable[tuple[str, torch.Tensor]], *,
                dtype: torch.dtype, device: torch.device, source: str) -> torch.nn.Module:
    """The architecture of `config` holding exactly `tensors`, in eval mode, frozen.

    Floating tensors are cast to `dtype`; every parameter and persistent buffer of the
    architecture must be given (tied weights may be given once) and nothing else.
    """
    transformers = transformers_module()
    with _no_init_weights(transformers):
        try:
            model: torch.nn.Module = transformers.AutoModelForCausalLM.from_config(config)
        except ValueError as exc:
            raise InvalidModel(f"{source}: transformers has no causal LM for this config "
                               f"({exc})") from exc
    model.eval().requires_grad_(False)
    problems: list[str] = []
    given: set[str] = set()
    for name, tensor in tensors:
        if _assign(model, name, tensor, dtype, device, problems):
            given.add(name)
    _check_complete(model, given, problems)
    if problems:
        shown = "; ".join(problems[:_SHOWN_PROBLEMS])
        more = f"; and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > \
            _SHOWN_PROBLEMS else ""
        raise InvalidModel(f"{source} does not fit its config.json "
                           f"({type(model).__name__}): {shown}{more}")
    return model.to(device)  # what was not assigned: non-persistent buffers (rotary tables)


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers, tied tensors counted once."""
    seen: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def _assign(model: torch.nn.Module, name: str, tensor: torch.Tensor, dtype: torch.dtype,
            device: torch.device, problems: list[str]) -> bool:
    """Put `tensor` in place of the placeholder called `name`; False (and a problem) if none."""
    owner, _, leaf = name.rpartition(".")
    try:
        module = model.get_submodule(owner)
    except AttributeError:
        module = None
    is_param = module is not None and module._parameters.get(leaf) is not None
    is_buffer = (module is not None and module._buffers.get(leaf) is not None
                 and leaf not in module._non_persistent_buffers_set)
    if module is None or not (is_param or is_buffer):
        problems.append(f"{name!r} is not one of its tensors")
        return False
    current = module._parameters[leaf] if is_param else module._buffers[leaf]
    assert current is not None
    if tuple(current.shape) != tuple(tensor.shape):
        problems.append(f"{name!r} is {list(tensor.shape)}, the architecture has "
                        f"{list(current.shape)}")
        return False
    value = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
    if is_param:
        module._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[leaf] = value
    return True


def _check_complete(model: torch.nn.Module, given: set[str], problems: list[str]) -> None:
    """Every tensor the model saves was given, or is tied to one that was."""
    missing = [name for name in model.state_dict() if name not in given]
    if not missing:
        return
    tie = getattr(model, "tie_weights", None)
    if callable(tie) and getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        tie()  # points the output embedding at the input embedding just assigned
    state = model.state_dict(keep_vars=True)
    given_ptrs = {state[name].data_ptr() for name in given if name in state}
    for name in missing:
        if name not in state or state[name].data_ptr() not in given_ptrs:
            problems.append(f"{name!r} is missing")


def _no_init_weights(transformers: ModuleType) -> contextlib.AbstractContextManager[Any]:
    """transformers' switch that skips weight initialisation (where it lives varies)."""
    for module_name in ("initialization", "modeling_utils"):
        with contextlib.suppress(ImportError):
            module = importlib.import_module(f"{transformers.__name__}.{module_name}")
            skip = getattr(module, "no_init_weights", None)
            if skip is not None:
                manager: contextlib.AbstractContextManager[Any] = skip()
                return manager
    return contextlib.nullcontext()  # only slower: the weights are all replaced anyway
