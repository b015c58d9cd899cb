"""Streaming writers: what they write, the reference safetensors library reads back identically."""

from __future__ import annotations

import json
import re
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file

from compress.errors import InvalidParameter, OutputExists
from compress.tensorio import (
    TORCH_DTYPES,
    Checkpoint,
    PlannedTensor,
    ShardedWriter,
    atomic_output_dir,
    plan_for,
    read_header,
)
from compress.tensorio.writer import SafetensorsWriter


def sample_tensors() -> dict[str, torch.Tensor]:
    """One tensor per dtype, with awkward shapes, plus empty, scalar and strided tensors."""
    generator = torch.Generator().manual_seed(0)
    tensors = {
        f"t.{name.lower()}": (torch.randn(3, 5, generator=generator) * 50).to(dtype)
        for name, dtype in TORCH_DTYPES.items()
    }
    tensors["t.bool"] = torch.randn(3, 5, generator=generator) > 0
    tensors["t.u64_big"] = torch.tensor([2**63 + 5, 1], dtype=torch.uint64)
    tensors["empty"] = torch.zeros(0, 7, dtype=torch.bfloat16)
    tensors["scalar"] = torch.tensor(3.25, dtype=torch.float64)
    tensors["transposed"] = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    tensors["sliced"] = torch.arange(20, dtype=torch.int16)[::3]
    tensors["nan_is_just_bytes"] = torch.tensor([float("nan"), float("-inf")])
    return tensors


def plan(tensors: dict[str, torch.Tensor]) -> list[PlannedTensor]:
    return [plan_for(name, t.dtype, t.shape) for name, t in tensors.items()]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8),
                       b.contiguous().reshape(-1).view(torch.uint8))


def write_file(path: Path, tensors: dict[str, torch.Tensor],
               metadata: dict[str, str] | None = None) -> Path:
    writer = SafetensorsWriter(path, plan(tensors), metadata)
    for name, tensor in tensors.items():
        writer.write(name, tensor)
    writer.close()
    return path


def test_reference_reads_back_every_dtype_bit_exact(tmp_path: Path) -> None:
    tensors = sample_tensors()
    metadata = {"format": "bitdelta", "format_version": "1", "note": "é ✓"}
    path = write_file(tmp_path / "out.safetensors", tensors, metadata)

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == metadata
        assert set(f.keys()) == set(tensors)
        for name, tensor in tensors.items():
            assert same_bits(f.get_tensor(name), tensor), name
    loaded = load_file(path)
    assert all(same_bits(loaded[n], t) for n, t in tensors.items())


def test_layout_is_valid_and_aligned(tmp_path: Path) -> None:
    tensors = sample_tensors()
    path = write_file(tmp_path / "out.safetensors", tensors)
    header = read_header(path)  # our own validation accepts it too
    assert header.header_len % 8 == 0  # data starts 8-byte aligned, as safetensors does
    assert list(header.tensors) == list(tensors)  # data in the planned order
    assert header.metadata == {}
    raw = json.loads(path.read_bytes()[8 : header.data_start])
    assert "__metadata__" not in raw


def test_non_ascii_tensor_names(tmp_path: Path) -> None:
    tensors = {"ß.weight": torch.ones(2), "层.bias": torch.zeros(1, dtype=torch.float16)}
    path = write_file(tmp_path / "u.safetensors", tensors)
    assert all(same_bits(load_file(path)[n], t) for n, t in tensors.items())


def test_plan_for_and_nbytes() -> None:
    item = plan_for("w", torch.bfloat16, torch.Size([3, 7]))
    assert item == PlannedTensor("w", "BF16", (3, 7))
    assert item.nbytes == 42
    assert PlannedTensor("s", "F64", ()).nbytes == 8
    assert PlannedTensor("e", "I32", (0, 9)).nbytes == 0


@pytest.mark.parametrize(
    ("name", "tensor", "error"),
    [
        ("b", torch.ones(2), "expected 'a' F32 [2], got 'b' F32 [2]"),
        ("a", torch.ones(2, dtype=torch.float16), "expected 'a' F32 [2], got 'a' F16 [2]"),
        ("a", torch.ones(1, 2), "expected 'a' F32 [2], got 'a' F32 [1, 2]"),
    ],
)
def test_writer_refuses_anything_but_the_next_planned_tensor(
        tmp_path: Path, name: str, tensor: torch.Tensor, error: str) -> None:
    writer = SafetensorsWriter(tmp_path / "o.safetensors",
                               [PlannedTensor("a", "F32", (2,)), PlannedTensor("b", "F32", (2,))])
    with pytest.raises(ValueError, match=re.escape(error)):
        writer.write(name, tensor)
    writer.write("a", torch.ones(2))
    writer.write("b", torch.ones(2))
    with pytest.raises(ValueError, match="'c' was not planned"):
        writer.write("c", torch.ones(2))
    writer.close()


def test_closing_early_names_the_missing_tensors(tmp_path: Path) -> None:
    writer = SafetensorsWriter(tmp_path / "o.safetensors",
                               [PlannedTensor(n, "U8", (1,)) for n in "abc"])
    writer.write("a", torch.ones(1, dtype=torch.uint8))
    with pytest.raises(ValueError, match=re.escape("closed before writing ['b', 'c']")):
        writer.close()


# --- sharding -----------------------------------------------------------------------------------


def write_sharded(out: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int,
                  metadata: dict[str, str] | None = None, stem: str = "model") -> list[Path]:
    writer = ShardedWriter(out, plan(tensors), metadata, stem=stem,
                           max_shard_bytes=max_shard_bytes)
    for name, tensor in tensors.items():
        writer.write(name, tensor)
    return writer.close()


def test_small_output_is_one_file_without_index(tmp_path: Path) -> None:
    tensors = {"a": torch.ones(4), "b": torch.zeros(2, 2)}
    written = write_sharded(tmp_path, tensors, max_shard_bytes=10**6, stem="delta")
    assert written == [tmp_path / "delta.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["delta.safetensors"]


def test_shards_and_index_as_transformers_writes_them(tmp_path: Path) -> None:
    tensors = {f"layers.{i}.weight": torch.full((4, 4), float(i)) for i in range(5)}  # 64 B each
    tensors["tiny"] = torch.ones(1, dtype=torch.int8)
    metadata = {"format": "pt"}
    written = write_sharded(tmp_path, tensors, max_shard_bytes=130, metadata=metadata)

    shard_names = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert [p.name for p in written] == [*shard_names, "model.safetensors.index.json"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"] == {"total_size": 5 * 64 + 1, "format": "pt"}
    assert index["weight_map"] == {
        "layers.0.weight": shard_names[0], "layers.1.weight": shard_names[0],
        "layers.2.weight": shard_names[1], "layers.3.weight": shard_names[1],
        "layers.4.weight": shard_names[2], "tiny": shard_names[2],
    }
    for shard in shard_names:
        with safe_open(str(tmp_path / shard), framework="pt") as f:
            assert f.metadata() == metadata  # every shard carries the metadata
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                assert index["weight_map"][name] == shard
                assert same_bits(f.get_tensor(name), tensors[name])
    with Checkpoint.open(tmp_path) as ckpt:
        assert ckpt.manifest.names == sorted(tensors)
        assert all(same_bits(ckpt.tensor(n), t) for n, t in tensors.items())


def test_a_tensor_larger_than_the_limit_gets_a_shard_of_its_own(tmp_path: Path) -> None:
    tensors = {"small": torch.ones(2), "huge": torch.ones(100), "after": torch.ones(2)}
    write_sharded(tmp_path, tensors, max_shard_bytes=16)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"small": "model-00001-of-00003.safetensors",
                                   "huge": "model-00002-of-00003.safetensors",
                                   "after": "model-00003-of-00003.safetensors"}


def test_empty_plan_writes_one_empty_file(tmp_path: Path) -> None:
    assert write_sharded(tmp_path, {}, max_shard_bytes=10) == [tmp_path / "model.safetensors"]
    assert load_file(tmp_path / "model.safetensors") == {}


def test_sharded_writer_enforces_the_planned_order(tmp_path: Path) -> None:
    tensors = {n: torch.ones(4) for n in "abcd"}  # 16 B each, two per shard at 32 B
    writer = ShardedWriter(tmp_path, plan(tensors), max_shard_bytes=32)
    with pytest.raises(ValueError, match=r"closed before writing \['a', 'b'\]"):
        writer.write("c", torch.ones(4))  # skips the first shard

    # A refused write changes nothing: the writer still takes the planned tensors.
    out = tmp_path / "2"
    out.mkdir()
    writer = ShardedWriter(out, plan(tensors), max_shard_bytes=32)
    writer.write("a", tensors["a"])
    with pytest.raises(ValueError, match=re.escape("expected 'b' F32 [4], got 'a'")):
        writer.write("a", tensors["a"])  # twice
    with pytest.raises(ValueError, match="'zz' was not planned"):
        writer.write("zz", torch.ones(4))
    for name in "bcd":
        writer.write(name, tensors[name])
    writer.close()
    with Checkpoint.open(out) as ckpt:
        assert ckpt.manifest.names == list("abcd")


def test_going_back_to_an_earlier_shard_is_refused(tmp_path: Path) -> None:
    tensors = {n: torch.ones(4) for n in "abcd"}
    writer = ShardedWriter(tmp_path, plan(tensors), max_shard_bytes=32)
    for name in "abc":
        writer.write(name, tensors[name])
    with pytest.raises(ValueError, match=r"closed before writing \['d'\]"):
        writer.write("a", tensors["a"])


def test_closing_before_every_shard_is_written_is_refused(tmp_path: Path) -> None:
    tensors = {n: torch.ones(4) for n in "abcd"}
    writer = ShardedWriter(tmp_path, plan(tensors), max_shard_bytes=32)
    writer.write("a", tensors["a"])
    writer.write("b", tensors["b"])
    with pytest.raises(ValueError, match=re.escape("closed before writing ['c', 'd']")):
        writer.close()
    assert not (tmp_path / "model.safetensors.index.json").exists()


@pytest.mark.parametrize("limit", [0, -1])
def test_max_shard_bytes_must_be_positive(tmp_path: Path, limit: int) -> None:
    with pytest.raises(InvalidParameter, match="max_shard_bytes must be positive"):
        ShardedWriter(tmp_path, [], max_shard_bytes=limit)


_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8,
           torch.int32, torch.int64, torch.uint8, torch.bool, torch.float8_e5m2]

random_tensors = st.dictionaries(
    keys=st.from_regex(r"[a-z]{1,6}(\.[a-z0-9_]{1,6}){0,2}", fullmatch=True),
    values=st.tuples(st.sampled_from(_DTYPES), st.lists(st.integers(0, 5), max_size=3),
                     st.integers(0, 2**16)),
    max_size=8,
)


@settings(max_examples=30, deadline=None)
@given(specs=random_tensors, max_shard_bytes=st.integers(1, 200))
def test_random_tensors_round_trip_through_shards(
        specs: dict[str, tuple[torch.dtype, list[int], int]], max_shard_bytes: int) -> None:
    tensors = {}
    for name, (dtype, shape, seed) in specs.items():
        raw = torch.randint(0, 256, (torch.Size(shape).numel() * dtype.itemsize,),
                            dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
        tensors[name] = raw.view(dtype).reshape(shape) if dtype != torch.bool else (
            raw.reshape(shape) > 127)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        written = write_sharded(out, tensors, max_shard_bytes, metadata={"k": "v"})
        assert all(p.exists() for p in written)
        if not tensors:
            return
        with Checkpoint.open(out) as ckpt:
            assert ckpt.manifest.names == sorted(tensors)
            assert ckpt.metadata == {"k": "v"}
            for name, tensor in tensors.items():
                assert same_bits(ckpt.tensor(name), tensor), name
        for path in written:
            if path.suffix == ".safetensors":
                for name, tensor in load_file(path).items():
                    assert same_bits(tensor, tensors[name]), name


def test_transformers_loads_a_sharded_model_we_wrote(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.models import TINY_LLAMA

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA))
    state = {k: v for k, v in model.state_dict().items() if "rotary" not in k}
    model.config.save_pretrained(tmp_path)
    written = write_sharded(tmp_path, state, max_shard_bytes=40_000, metadata={"format": "pt"})
    assert len(written) > 2  # really sharded
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    for name, tensor in loaded.state_dict().items():
        if name in state:
            assert same_bits(tensor, state[name]), name


# --- atomic output directories ------------------------------------------------------------------


def test_atomic_output_dir_publishes_on_success(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "out"
    with atomic_output_dir(out) as scratch:
        assert scratch.parent == out.parent
        assert not out.exists()  # nothing visible while the block runs
        (scratch / "a.txt").write_text("a")
        (scratch / "sub").mkdir()
        (scratch / "sub" / "b.txt").write_text("b")
    assert (out / "a.txt").read_text() == "a"
    assert (out / "sub" / "b.txt").read_text() == "b"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no scratch left


def fail_inside(out: Path, error: BaseException) -> None:
    with atomic_output_dir(out) as scratch:
        (scratch / "partial.safetensors").write_bytes(b"x" * 100)
        (scratch / "sub").mkdir()
        raise error


def test_atomic_output_dir_leaves_nothing_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="codec failed"):
        fail_inside(out, RuntimeError("codec failed"))
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_may_replace_an_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with atomic_output_dir(out) as scratch:
        (scratch / "f").write_text("1")
    assert (out / "f").read_text() == "1"


def test_atomic_output_dir_keeps_an_empty_directory_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyError):
        fail_inside(out, KeyError("x"))
    assert list(tmp_path.iterdir()) == [out]
    assert list(out.iterdir()) == []


def test_atomic_output_dir_refuses_existing_output(tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("precious")
    with pytest.raises(OutputExists, match="already exists and is not empty"), \
            atomic_output_dir(full):
        pytest.fail("the block must not run")
    assert (full / "keep.txt").read_text() == "precious"

    a_file = tmp_path / "file"
    a_file.write_text("precious")
    with pytest.raises(OutputExists), atomic_output_dir(a_file):
        pytest.fail("the block must not run")
    assert a_file.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]


def test_header_prefix_matches_header_length(tmp_path: Path) -> None:
    path = write_file(tmp_path / "o.safetensors", {"x": torch.ones(3)}, {"a": "b"})
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert len(data) == 8 + n + 12
    assert data[8 + n :] == torch.ones(3).numpy().tobytes()
