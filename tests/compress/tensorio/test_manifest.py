"""Manifests: layout, digest, shard-index checks and the mismatch list between two models."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from compress.errors import IncompatibleModels, InvalidModel
from compress.tensorio import (
    Manifest,
    SafetensorsHeader,
    TensorEntry,
    TensorSpec,
    manifest_from_headers,
    parse_weight_map,
    require_same_layout,
    shape_mismatches,
)


def header(*tensors: tuple[str, str, tuple[int, ...]]) -> SafetensorsHeader:
    """A header laying `tensors` out back to back (sizes as if every dtype were 2 bytes)."""
    entries, offset = {}, 0
    for name, dtype, shape in tensors:
        size = 2
        for dim in shape:
            size *= dim
        entries[name] = TensorEntry(name, dtype, shape, offset, offset + size)
        offset += size
    return SafetensorsHeader(tensors=entries, metadata={}, header_len=64)


SPECS = [
    TensorSpec("lm_head.weight", "F16", (96, 48), "model-00002-of-00002.safetensors"),
    TensorSpec("embed.weight", "F16", (96, 48), "model-00001-of-00002.safetensors"),
    TensorSpec("norm.weight", "F32", (48,), "model-00001-of-00002.safetensors"),
    TensorSpec("step", "I64", (), "model-00002-of-00002.safetensors"),
]


def test_manifest_is_sorted_by_name_and_indexable() -> None:
    manifest = Manifest(SPECS)
    assert manifest.names == ["embed.weight", "lm_head.weight", "norm.weight", "step"]
    assert [s.name for s in manifest] == manifest.names
    assert len(manifest) == 4
    assert "norm.weight" in manifest
    assert "missing" not in manifest
    assert manifest["step"].shape == ()
    assert manifest.get("missing") is None
    assert manifest.files == ["model-00001-of-00002.safetensors",
                              "model-00002-of-00002.safetensors"]
    with pytest.raises(KeyError):
        manifest["missing"]


def test_summary_counts_parameters_and_dtypes() -> None:
    summary = Manifest(SPECS).summary()
    assert summary.tensor_count == 4
    assert summary.parameter_count == 96 * 48 * 2 + 48 + 1  # a scalar holds one parameter
    assert summary.dtypes == {"F16": 2, "F32": 1, "I64": 1}
    assert list(summary.dtypes) == sorted(summary.dtypes)
    assert json.loads(json.dumps(summary.to_dict())) == {
        "tensor_count": 4, "parameter_count": 96 * 48 * 2 + 49,
        "dtypes": {"F16": 2, "F32": 1, "I64": 1},
    }


def test_dict_round_trip() -> None:
    manifest = Manifest(SPECS)
    back = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert list(back) == list(manifest)
    assert back.digest() == manifest.digest()


def test_digest_is_the_sha256_of_the_canonical_layout() -> None:
    canonical = ('[["embed.weight","F16",[96,48]],["lm_head.weight","F16",[96,48]],'
                 '["norm.weight","F32",[48]],["step","I64",[]]]')
    assert Manifest(SPECS).digest() == hashlib.sha256(canonical.encode()).hexdigest()


def test_digest_ignores_order_and_files_but_not_layout() -> None:
    base = Manifest(SPECS).digest()
    resharded = [TensorSpec(s.name, s.dtype, s.shape, "model.safetensors") for s in SPECS]
    assert Manifest(reversed(resharded)).digest() == base
    changed = [
        [*SPECS[:3], TensorSpec("step", "I32", (), "x")],  # dtype
        [*SPECS[:3], TensorSpec("step", "I64", (1,), "x")],  # shape
        [*SPECS[:3], TensorSpec("steps", "I64", (), "x")],  # name
        SPECS[:3],  # a tensor fewer
    ]
    digests = {Manifest(specs).digest() for specs in changed}
    assert base not in digests
    assert len(digests) == len(changed)


def test_non_ascii_names_have_a_stable_digest() -> None:
    manifest = Manifest([TensorSpec("é.weight", "F32", (2,), "m.safetensors")])
    canonical = '[["\\u00e9.weight","F32",[2]]]'
    assert manifest.digest() == hashlib.sha256(canonical.encode()).hexdigest()


# --- joining headers ----------------------------------------------------------------------------


def test_manifest_from_headers_records_each_tensors_file() -> None:
    headers = {
        "b.safetensors": header(("z", "F16", (2, 3)), ("y", "BF16", (4,))),
        "a.safetensors": header(("x", "F16", (0,))),
    }
    manifest = manifest_from_headers(headers, {"x": "a.safetensors", "y": "b.safetensors",
                                               "z": "b.safetensors"})
    assert [(s.name, s.dtype, s.shape, s.file) for s in manifest] == [
        ("x", "F16", (0,), "a.safetensors"),
        ("y", "BF16", (4,), "b.safetensors"),
        ("z", "F16", (2, 3), "b.safetensors"),
    ]


def test_a_tensor_in_two_shards_is_refused() -> None:
    headers = {"a.safetensors": header(("x", "F16", (2,))),
               "b.safetensors": header(("x", "F16", (2,)))}
    with pytest.raises(InvalidModel, match=re.escape(
            "'x' appears in both 'a.safetensors' and 'b.safetensors'")):
        manifest_from_headers(headers)


def test_no_tensors_is_refused() -> None:
    with pytest.raises(InvalidModel, match="no tensors"):
        manifest_from_headers({"a.safetensors": header()})
    with pytest.raises(InvalidModel, match="no tensors"):
        manifest_from_headers({})


def test_index_disagreements_are_each_named() -> None:
    headers = {"a.safetensors": header(("x", "F16", (2,)), ("w", "F16", (2,))),
               "b.safetensors": header(("y", "F16", (2,)))}
    weight_map = {"x": "a.safetensors", "y": "a.safetensors", "ghost": "b.safetensors"}
    with pytest.raises(InvalidModel) as info:
        manifest_from_headers(headers, weight_map)
    message = str(info.value)
    assert "the shard index disagrees with the shards" in message
    assert "'ghost' is in the index but in no shard" in message
    assert "'y' is indexed in 'a.safetensors' but lives in 'b.safetensors'" in message
    assert "'w' is in 'a.safetensors' but not in the index" in message
    assert "'x'" not in message


@pytest.mark.parametrize("index", [
    [], "weight_map", {}, {"weight_map": []}, {"weight_map": {"x": 1}}, {"weight_map": {"x": None}},
])
def test_parse_weight_map_rejects_bad_indexes(index: object) -> None:
    with pytest.raises(InvalidModel, match=r"model\.safetensors\.index\.json: expected"):
        parse_weight_map(index, "model.safetensors.index.json")


def test_parse_weight_map() -> None:
    index = {"metadata": {"total_size": 10}, "weight_map": {"x": "a.safetensors"}}
    assert parse_weight_map(index, "i.json") == {"x": "a.safetensors"}


# --- comparing two manifests --------------------------------------------------------------------


def test_identical_layouts_have_no_mismatches() -> None:
    require_same_layout(Manifest(SPECS), Manifest(reversed(SPECS)))
    assert shape_mismatches(Manifest(SPECS), Manifest(SPECS)) == []


def test_dtype_differences_are_not_mismatches() -> None:
    other = [TensorSpec(s.name, "BF16", s.shape, s.file) for s in SPECS]
    assert shape_mismatches(Manifest(SPECS), Manifest(other)) == []


def test_every_missing_extra_and_reshaped_tensor_is_named() -> None:
    base = Manifest(SPECS)
    other = Manifest([
        TensorSpec("embed.weight", "F16", (97, 48), "f"),  # reshaped
        TensorSpec("norm.weight", "F32", (48,), "f"),  # same
        TensorSpec("step", "I64", (1,), "f"),  # reshaped (scalar -> [1])
        TensorSpec("extra.bias", "F32", (3,), "f"),  # extra
        # lm_head.weight missing
    ])
    with pytest.raises(IncompatibleModels) as info:
        require_same_layout(base, other, subject="the fine-tune 'ft-1'")
    assert info.value.mismatches == [
        "tensor 'embed.weight' has shape [97, 48], base has [96, 48]",
        "missing tensor 'lm_head.weight' (base has [96, 48])",
        "tensor 'step' has shape [1], base has []",
        "extra tensor 'extra.bias' not in the base",
    ]
    message = str(info.value)
    assert message.startswith("the fine-tune 'ft-1' does not fit its base: ")
    for name in ["embed.weight", "lm_head.weight", "step", "extra.bias"]:
        assert repr(name) in message


def test_long_mismatch_lists_are_cut_in_the_message_but_kept_whole() -> None:
    base = Manifest([TensorSpec(f"t{i:02d}", "F32", (1,), "f") for i in range(25)])
    with pytest.raises(IncompatibleModels) as info:
        require_same_layout(base, Manifest([TensorSpec("other", "F32", (1,), "f")]))
    assert len(info.value.mismatches) == 26
    assert "'t19'" in str(info.value)
    assert "'t20'" not in str(info.value)
    assert str(info.value).endswith("; and 6 more")
