"""Checkpoint: single files and sharded directories, read back bit-exact; pickles refused."""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from compress.errors import InvalidModel, InvalidSafetensors, NonFiniteTensor, PickleRefused
from compress.tensorio import TORCH_DTYPES, Checkpoint, ensure_finite, is_model_file
from tests.malformed import PICKLE_CASES, MalformedCase, nan_safetensors
from tests.models import make_tiny_llama


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8),
                       b.contiguous().reshape(-1).view(torch.uint8))


def every_dtype() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for name, dtype in TORCH_DTYPES.items():
        raw = torch.randint(0, 256, (4 * 3 * dtype.itemsize,), dtype=torch.uint8,
                            generator=generator)
        tensors[name.lower()] = (raw.view(dtype) if dtype != torch.bool else raw > 127
                                 ).reshape(4, 3)
        tensors[name.lower() + ".empty"] = torch.zeros(2, 0, 5, dtype=dtype)
    tensors["scalar"] = torch.tensor(-7.5, dtype=torch.bfloat16)
    return tensors


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("base") / "llama")


@pytest.fixture(scope="module")
def sharded_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.models import TINY_LLAMA

    torch.manual_seed(3)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).to(torch.bfloat16)
    out = tmp_path_factory.mktemp("sharded") / "llama"
    model.save_pretrained(out, max_shard_size="20KB")
    return out


def test_single_file_every_dtype_bit_exact(tmp_path: Path) -> None:
    tensors = every_dtype()
    path = tmp_path / "all.safetensors"
    save_file(tensors, path, metadata={"format": "pt", "k": "v"})
    with Checkpoint.open(path) as ckpt:
        assert ckpt.manifest.names == sorted(tensors)
        assert ckpt.metadata == {"format": "pt", "k": "v"}
        assert ckpt.config is None
        assert ckpt.total_bytes == path.stat().st_size
        for name, tensor in tensors.items():
            got = ckpt.tensor(name)
            assert same_bits(got, tensor), name
            assert got.is_contiguous()
            assert ckpt.entry(name).shape == tuple(tensor.shape)
        assert dict(ckpt.iter_tensors()).keys() == set(tensors)
        assert [n for n, _ in ckpt.iter_tensors()] == sorted(tensors)


def test_tensors_are_fresh_memory(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(3)}, path)
    with Checkpoint.open(path) as ckpt:
        first = ckpt.tensor("w")
        first.add_(1)
        assert torch.equal(ckpt.tensor("w"), torch.ones(3))


def test_save_pretrained_directory(tiny_llama: Path) -> None:
    reference = load_file(tiny_llama / "model.safetensors")
    with Checkpoint.open(tiny_llama) as ckpt:
        assert ckpt.files == [tiny_llama / "model.safetensors"]
        assert ckpt.manifest.names == sorted(reference)
        assert ckpt.config is not None
        assert ckpt.config["hidden_size"] == 48
        assert ckpt.metadata == {"format": "pt"}
        for name, tensor in reference.items():
            assert same_bits(ckpt.tensor(name), tensor), name
            assert ckpt.manifest[name].file == "model.safetensors"


def test_sharded_directory_with_index(sharded_llama: Path) -> None:
    index = json.loads((sharded_llama / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    with Checkpoint.open(str(sharded_llama)) as ckpt:  # str paths work too
        assert [f.name for f in ckpt.files] == shards
        assert ckpt.manifest.files == shards
        assert set(ckpt.manifest.names) == set(index["weight_map"])
        assert ckpt.total_bytes == sum((sharded_llama / s).stat().st_size for s in shards)
        for shard in shards:
            for name, tensor in load_file(sharded_llama / shard).items():
                assert tensor.dtype == torch.bfloat16
                assert ckpt.manifest[name].file == shard == index["weight_map"][name]
                assert same_bits(ckpt.tensor(name), tensor), name


def test_close_releases_file_handles(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(3)}, path)
    ckpt = Checkpoint.open(path)
    ckpt.tensor("w")
    handles = list(ckpt._handles.values())
    assert handles
    ckpt.close()
    assert all(h.closed for h in handles)
    assert torch.equal(ckpt.tensor("w"), torch.ones(3))  # reopens on demand
    ckpt.close()


# --- pickles ------------------------------------------------------------------------------------


def torch_save(path: Path) -> Path:
    torch.save({"w": torch.ones(2)}, path)
    return path


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.ckpt", "w.pth"])
def test_directory_with_only_a_pickle_is_refused(tmp_path: Path, name: str) -> None:
    torch_save(tmp_path / name)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PickleRefused, match=f"{name!r} is a pickle checkpoint") as info:
        Checkpoint.open(tmp_path)
    assert "safetensors" in info.value.detail


def test_pickle_file_path_is_refused_by_name(tmp_path: Path) -> None:
    path = torch_save(tmp_path / "pytorch_model.bin")
    with pytest.raises(PickleRefused, match="named like a pickle checkpoint"):
        Checkpoint.open(path)


@pytest.mark.parametrize("case", PICKLE_CASES, ids=lambda c: c.id)
def test_pickle_content_under_a_safetensors_name_is_refused(tmp_path: Path,
                                                            case: MalformedCase) -> None:
    (tmp_path / "model.safetensors").write_bytes(case.data)
    with pytest.raises(PickleRefused, match=re.escape("model.safetensors")):
        Checkpoint.open(tmp_path)


def test_safetensors_beside_a_pickle_is_used(tmp_path: Path) -> None:
    torch_save(tmp_path / "pytorch_model.bin")
    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    with Checkpoint.open(tmp_path) as ckpt:
        assert ckpt.manifest.names == ["w"]
        assert [f.name for f in ckpt.files] == ["model.safetensors"]


def test_pickle_bytes_are_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(torch, "load", boom)
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    (tmp_path / "model.safetensors").write_bytes(buffer.getvalue())
    with pytest.raises(PickleRefused):
        Checkpoint.open(tmp_path)


# --- unusable models ----------------------------------------------------------------------------


def test_missing_and_empty_paths(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="does not exist"):
        Checkpoint.open(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(InvalidModel, match=re.escape("holds no .safetensors files")):
        Checkpoint.open(tmp_path)


def test_malformed_shard_is_refused(tmp_path: Path) -> None:
    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    with (tmp_path / "model.safetensors").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(InvalidSafetensors, match=re.escape("model.safetensors: 1 trailing bytes")):
        Checkpoint.open(tmp_path)


def copy_sharded(src: Path, dst: Path) -> dict[str, object]:
    shutil.copytree(src, dst)
    index: dict[str, object] = json.loads((dst / "model.safetensors.index.json").read_text())
    return index


def write_index(dst: Path, index: dict[str, object], name: str = "model.safetensors.index.json"
                ) -> None:
    (dst / name).write_text(json.dumps(index))


def test_index_naming_the_wrong_shard(sharded_llama: Path, tmp_path: Path) -> None:
    index = copy_sharded(sharded_llama, tmp_path / "m")
    weight_map = index["weight_map"]
    assert isinstance(weight_map, dict)
    first, second = sorted(set(weight_map.values()))[:2]
    moved = sorted(n for n, f in weight_map.items() if f == first)[0]
    weight_map[moved] = second
    weight_map["ghost.weight"] = first
    write_index(tmp_path / "m", index)
    with pytest.raises(InvalidModel) as info:
        Checkpoint.open(tmp_path / "m")
    assert f"{moved!r} is indexed in {second!r} but lives in {first!r}" in str(info.value)
    assert "'ghost.weight' is in the index but in no shard" in str(info.value)


def test_shard_missing_from_disk(sharded_llama: Path, tmp_path: Path) -> None:
    index = copy_sharded(sharded_llama, tmp_path / "m")
    weight_map = index["weight_map"]
    assert isinstance(weight_map, dict)
    last = sorted(set(weight_map.values()))[-1]
    (tmp_path / "m" / last).unlink()
    with pytest.raises(InvalidModel, match="is in the index but in no shard"):
        Checkpoint.open(tmp_path / "m")


def test_stray_shard_not_in_the_index(sharded_llama: Path, tmp_path: Path) -> None:
    copy_sharded(sharded_llama, tmp_path / "m")
    save_file({"stray.weight": torch.ones(1)}, tmp_path / "m" / "extra.safetensors")
    with pytest.raises(InvalidModel, match=re.escape(
            "'stray.weight' is in 'extra.safetensors' but not in the index")):
        Checkpoint.open(tmp_path / "m")


def test_tensor_in_two_shards(tmp_path: Path) -> None:
    save_file({"w": torch.ones(1)}, tmp_path / "a.safetensors")
    save_file({"w": torch.ones(1)}, tmp_path / "b.safetensors")
    with pytest.raises(InvalidModel, match="'w' appears in both"):
        Checkpoint.open(tmp_path)


@pytest.mark.parametrize(
    ("index_text", "message"),
    [
        ("{not json", "model.safetensors.index.json is not valid JSON"),
        ('{"metadata": {}}', "expected an object with a 'weight_map'"),
        ('{"weight_map": {"w": 3}}', "expected an object with a 'weight_map'"),
        (b"\xff\xfe".decode("latin-1"), "is not valid JSON"),
    ],
)
def test_bad_index_files(tmp_path: Path, index_text: str, message: str) -> None:
    save_file({"w": torch.ones(1)}, tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(index_text, encoding="latin-1")
    with pytest.raises(InvalidModel, match=message):
        Checkpoint.open(tmp_path)


def test_two_indexes_are_refused(tmp_path: Path) -> None:
    save_file({"w": torch.ones(1)}, tmp_path / "model.safetensors")
    for stem in ("model", "other"):
        write_index(tmp_path, {"weight_map": {"w": "model.safetensors"}},
                    f"{stem}.safetensors.index.json")
    with pytest.raises(InvalidModel, match="several shard indexes"):
        Checkpoint.open(tmp_path)


@pytest.mark.parametrize(("text", "message"), [("[1, 2]", "must hold a JSON object"),
                                               ("{", "config.json is not valid JSON")])
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    save_file({"w": torch.ones(1)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(InvalidModel, match=message):
        Checkpoint.open(tmp_path)


# --- finite values ------------------------------------------------------------------------------


def test_finite_tensor_refuses_nan_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "nan.safetensors"
    path.write_bytes(nan_safetensors(torch.bfloat16))
    with Checkpoint.open(path) as ckpt:  # opening checks layout only
        assert ckpt.finite_tensor("layers.0.mlp.up_proj.weight").dtype == torch.bfloat16
        assert ckpt.finite_tensor("layers.0.step").dtype == torch.int32
        with pytest.raises(NonFiniteTensor) as info:
            ckpt.finite_tensor("layers.0.mlp.down_proj.weight")
    assert info.value.tensor_name == "layers.0.mlp.down_proj.weight"
    assert "in nan.safetensors" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_ensure_finite(value: float) -> None:
    ensure_finite("ints", torch.tensor([-1, 2**31 - 1], dtype=torch.int32))
    ensure_finite("fine", torch.tensor([1e30, -0.0]))
    with pytest.raises(NonFiniteTensor, match="tensor 'w' in here"):
        ensure_finite("w", torch.tensor([0.0, value], dtype=torch.float16), "here")


@pytest.mark.parametrize(("name", "accepted"), [
    ("model.safetensors", True), ("model-00001-of-00002.safetensors", True),
    ("model.safetensors.index.json", True), ("config.json", True), ("tokenizer.json", True),
    ("tokenizer.model", True), ("merges.txt", True), ("README.md", True),
    ("pytorch_model.bin", False), ("training_args.bin", False), ("optimizer.pt", False),
    (".gitattributes", False), (".hidden.json", False), ("run.sh", False),
    ("weights.npz", False)])
def test_the_files_of_a_model(name: str, accepted: bool) -> None:
    assert is_model_file(name) is accepted
