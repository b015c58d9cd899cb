"""Model manifests: every tensor's name, dtype, shape and file, and a digest of the layout.

The digest covers names, dtypes and shapes only (not file names), so re-sharding a model
does not change it; the registry records per-file sha256 for content identity.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from compress.errors import IncompatibleModels, InvalidModel
from compress.tensorio.header import SafetensorsHeader


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ManifestSummary:
    tensor_count: int
    parameter_count: int
    dtypes: dict[str, int]  # dtype -> number of tensors

    def to_dict(self) -> dict[str, Any]:
        return {"tensor_count": self.tensor_count, "parameter_count": self.parameter_count,
                "dtypes": self.dtypes}


class Manifest:
    """An immutable, name-sorted map of tensor specs."""

    def __init__(self, specs: Iterable[TensorSpec]) -> None:
        ordered = sorted(specs, key=lambda s: s.name)
        self._specs: dict[str, TensorSpec] = {s.name: s for s in ordered}

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> TensorSpec:
        return self._specs[name]

    def __iter__(self) -> Any:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def get(self, name: str) -> TensorSpec | None:
        return self._specs.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    @property
    def files(self) -> list[str]:
        return sorted({s.file for s in self._specs.values()})

    def summary(self) -> ManifestSummary:
        return ManifestSummary(
            tensor_count=len(self._specs),
            parameter_count=sum(s.numel for s in self._specs.values()),
            dtypes=dict(sorted(Counter(s.dtype for s in self._specs.values()).items())),
        )

    def digest(self) -> str:
        """sha256 of the canonical layout: sorted names with dtype and shape."""
        canonical = [[s.name, s.dtype, list(s.shape)] for s in self._specs.values()]
        payload = json.dumps(canonical, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"tensors": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape),
                             "file": s.file} for s in self._specs.values()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(TensorSpec(name=t["name"], dtype=t["dtype"], shape=tuple(t["shape"]),
                              file=t["file"]) for t in data["tensors"])


def manifest_from_headers(
    headers: Mapping[str, SafetensorsHeader], weight_map: Mapping[str, str] | None = None
) -> Manifest:
    """Join per-file headers into one manifest, checking a shard index if there is one."""
    specs: dict[str, TensorSpec] = {}
    for filename, header in sorted(headers.items()):
        for entry in header.tensors.values():
            if entry.name in specs:
                raise InvalidModel(
                    f"tensor {entry.name!r} appears in both {specs[entry.name].file!r} and "
                    f"{filename!r}; each tensor must live in exactly one shard"
                )
            specs[entry.name] = TensorSpec(entry.name, entry.dtype, entry.shape, filename)
    if not specs:
        raise InvalidModel("the model has no tensors; upload at least one .safetensors file")
    if weight_map is not None:
        _check_weight_map(specs, weight_map)
    return Manifest(specs.values())


def _check_weight_map(specs: Mapping[str, TensorSpec], weight_map: Mapping[str, str]) -> None:
    problems: list[str] = []
    for name, filename in sorted(weight_map.items()):
        spec = specs.get(name)
        if spec is None:
            problems.append(f"{name!r} is in the index but in no shard")
        elif spec.file != filename:
            problems.append(f"{name!r} is indexed in {filename!r} but lives in {spec.file!r}")
    problems += [f"{name!r} is in {spec.file!r} but not in the index"
                 for name, spec in sorted(specs.items()) if name not in weight_map]
    if problems:
        raise InvalidModel("the shard index disagrees with the shards: " + "; ".join(problems[:20]))


def parse_weight_map(index: Any, source: str) -> dict[str, str]:
    """Extract and type-check the weight_map of a `*.safetensors.index.json` document."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise InvalidModel(f"{source}: expected an object with a 'weight_map' of name -> file")
    return weight_map


def shape_mismatches(base: Manifest, other: Manifest) -> list[str]:
    """Every way `other` fails to have exactly the base's tensor names and shapes."""
    problems: list[str] = []
    for spec in base:
        theirs = other.get(spec.name)
        if theirs is None:
            problems.append(f"missing tensor {spec.name!r} (base has {list(spec.shape)})")
        elif theirs.shape != spec.shape:
            problems.append(
                f"tensor {spec.name!r} has shape {list(theirs.shape)}, base has {list(spec.shape)}"
            )
    problems += [f"extra tensor {spec.name!r} not in the base" for spec in other
                 if spec.name not in base]
    return problems


def require_same_layout(base: Manifest, other: Manifest, subject: str = "the fine-tune") -> None:
    problems = shape_mismatches(base, other)
    if problems:
        raise IncompatibleModels(subject, problems)
