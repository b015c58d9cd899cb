"""compress_bitdelta on real safetensors models: format, report, dtypes, sharding, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from compress.bitdelta import (
    DELTA_INDEX,
    FORMAT,
    BitDeltaReport,
    ScaleMode,
    compress_bitdelta,
    decompress_delta,
    load_bitdelta,
)
from compress.errors import (
    IncompatibleModels,
    InvalidParameter,
    NonFiniteTensor,
    OutputExists,
    PickleRefused,
)
from compress.tensorio import Checkpoint
from kernels import pack_signs
from tests.compress.bitdelta.helpers import tensors_of, variant
from tests.compress.conftest import TinyPairFactory
from tests.compress.helpers import nothing_written
from tests.compress.tensorio.helpers import MemorySource

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LATE_WEIGHT = "model.layers.1.mlp.up_proj.weight"  # read after most others


@pytest.fixture(scope="module")
def row_delta(tiny_base: Path, tiny_finetune: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, BitDeltaReport]:
    out = tmp_path_factory.mktemp("row") / "delta"
    return out, compress_bitdelta(tiny_base, tiny_finetune, out)


def test_delta_holds_bits_scales_and_changed_tensors(
        tiny_base: Path, tiny_finetune: Path, row_delta: tuple[Path, BitDeltaReport]) -> None:
    out, _ = row_delta
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "delta.safetensors",
                                                      "report.json"]
    base, finetune, delta = tensors_of(tiny_base), tensors_of(tiny_finetune), tensors_of(out)
    targets = sorted(n for n in base if n.removesuffix(".weight").endswith(PROJECTIONS))
    assert len(targets) == 14
    for name in targets:
        module = name.removesuffix(".weight")
        diff = finetune[name].float() - base[name].float()
        assert torch.equal(delta[f"{name}.bits"], pack_signs(diff))
        torch.testing.assert_close(delta[f"{name}.scale"].double(),
                                   diff.double().abs().mean(dim=1), rtol=1e-6, atol=0.0)
        assert name not in delta
        assert module not in delta
    others = sorted(set(base) - set(targets))
    assert others  # embeddings, lm_head, norms: all changed by make_finetune
    for name in others:
        assert torch.equal(delta[name], finetune[name])
    assert len(delta) == 2 * len(targets) + len(others)

    with Checkpoint.open(out) as ckpt:
        meta = ckpt.metadata
        base_digest = Checkpoint.open(tiny_base).manifest.digest()
    assert meta["format"] == FORMAT
    assert meta["format_version"] == "1"
    assert meta["scale_mode"] == "row"
    assert meta["base_manifest_digest"] == base_digest
    assert json.loads(meta["compressed_modules"]) == [t.removesuffix(".weight") for t in targets]
    assert json.loads(meta["compressed_dtypes"])[targets[0].removesuffix(".weight")] == "F32"
    assert meta["tool_version"].startswith("deltahub ")
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (tiny_finetune / "config.json").read_text())


def test_report_errors_match_a_direct_computation(
        tiny_base: Path, tiny_finetune: Path, row_delta: tuple[Path, BitDeltaReport]) -> None:
    out, report = row_delta
    base, finetune, delta = tensors_of(tiny_base), tensors_of(tiny_finetune), tensors_of(out)
    total_error = total_delta = total_weight = 0.0
    for entry in report.compressed:
        k = entry.shape[1]
        approx = decompress_delta(delta[f"{entry.name}.bits"], delta[f"{entry.name}.scale"], k)
        diff = finetune[entry.name].double() - base[entry.name].double()
        error = float(torch.linalg.vector_norm(diff - approx.double()))
        w_hat = base[entry.name].double() + approx.double()
        w_error = float(torch.linalg.vector_norm(finetune[entry.name].double() - w_hat))
        w_norm = float(torch.linalg.vector_norm(finetune[entry.name].double()))
        assert math.isclose(entry.delta_rel_error, error / float(torch.linalg.vector_norm(diff)),
                            rel_tol=1e-4)
        assert math.isclose(entry.weight_rel_error, w_error / w_norm, rel_tol=1e-4)
        total_error += error**2
        total_delta += float((diff**2).sum())
        total_weight += w_norm**2
    assert math.isclose(report.delta_rel_error, math.sqrt(total_error / total_delta),
                        rel_tol=1e-4)
    assert math.isclose(report.weight_rel_error, math.sqrt(total_error / total_weight),
                        rel_tol=1e-4)
    assert 0.3 < report.delta_rel_error < 0.8  # 1-bit with a Gaussian-like ΔW: about 0.6
    full = [t for t in report.tensors if t.kind == "full"]
    assert full
    assert all(t.delta_rel_error == 0.0 for t in full)


def test_errors_by_kind_add_up_to_the_report(row_delta: tuple[Path, BitDeltaReport]) -> None:
    _, report = row_delta
    by_kind = report.errors_by_kind()
    assert list(by_kind) == sorted(PROJECTIONS)
    for kind, errors in by_kind.items():
        mine = [t for t in report.compressed if t.name.endswith(f".{kind}.weight")]
        assert errors.delta_rel_error == pytest.approx(math.sqrt(
            sum(t.error_sq for t in mine) / sum(t.delta_sq for t in mine)), rel=1e-12)
    for field in ("delta_sq", "error_sq", "finetune_sq"):
        assert sum(getattr(e, field) for e in by_kind.values()) == pytest.approx(
            getattr(report.errors, field), rel=1e-12)


def test_report_sizes_ratio_and_json(tiny_finetune: Path,
                                     row_delta: tuple[Path, BitDeltaReport]) -> None:
    out, report = row_delta
    assert report.bytes_in == (tiny_finetune / "model.safetensors").stat().st_size
    assert report.bytes_out == (out / "delta.safetensors").stat().st_size
    assert report.ratio == report.bytes_in / report.bytes_out > 1
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["gb_in"] == report.bytes_in / 1e9
    assert saved["compressed_count"] == 14
    assert len(saved["tensors"]) == len(report.tensors)
    assert sum(t["bytes_out"] for t in saved["tensors"]) < report.bytes_out  # + header


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_float32_statistics(
        dtype: torch.dtype, tiny_pair: TinyPairFactory, tmp_path: Path) -> None:
    pair = tiny_pair(dtype)
    report = compress_bitdelta(pair.base, pair.finetune, tmp_path / "delta")
    base, finetune = tensors_of(pair.base), tensors_of(pair.finetune)
    delta = tensors_of(tmp_path / "delta")
    for entry in report.compressed:
        diff = finetune[entry.name].double() - base[entry.name].double()  # exact for fp16/bf16
        assert entry.dtype == {torch.float16: "F16", torch.bfloat16: "BF16"}[dtype]
        assert delta[f"{entry.name}.scale"].dtype == torch.float32
        torch.testing.assert_close(delta[f"{entry.name}.scale"].double(),
                                   diff.abs().mean(dim=1), rtol=1e-6, atol=0.0)
        assert torch.equal(delta[f"{entry.name}.bits"], pack_signs(diff))
        assert math.isclose(entry.delta_sq, float((diff**2).sum()), rel_tol=1e-5)
    for entry in report.tensors:
        if entry.kind == "full":
            assert delta[entry.name].dtype == dtype


def test_unchanged_tensors_are_omitted(tiny_base: Path, tiny_finetune: Path,
                                       tmp_path: Path) -> None:
    base = tensors_of(tiny_base)
    finetune = variant(tiny_finetune, tmp_path / "ft", {
        "model.norm.weight": base["model.norm.weight"],
        "model.embed_tokens.weight": base["model.embed_tokens.weight"]})
    report = compress_bitdelta(tiny_base, finetune, tmp_path / "delta")
    assert report.omitted == ["model.embed_tokens.weight", "model.norm.weight"]
    stored = tensors_of(tmp_path / "delta")
    assert "model.norm.weight" not in stored
    assert "model.embed_tokens.weight" not in stored
    assert "lm_head.weight" in stored


def test_a_dtype_change_counts_as_a_change(tiny_base: Path, tiny_finetune: Path,
                                           tmp_path: Path) -> None:
    norm = tensors_of(tiny_base)["model.norm.weight"]
    finetune = variant(tiny_finetune, tmp_path / "ft", {"model.norm.weight": norm.half()})
    compress_bitdelta(tiny_base, finetune, tmp_path / "delta")
    assert tensors_of(tmp_path / "delta")["model.norm.weight"].dtype == torch.float16


def test_sharded_inputs_and_sharded_output(tiny_base: Path, tiny_sharded_finetune: Path,
                                           row_delta: tuple[Path, BitDeltaReport],
                                           tmp_path: Path) -> None:
    assert len(list(tiny_sharded_finetune.glob("*.safetensors"))) > 1
    out = tmp_path / "delta"
    report = compress_bitdelta(tiny_base, tiny_sharded_finetune, out, max_shard_bytes=20_000)
    shards = sorted(p.name for p in out.glob("delta-*.safetensors"))
    assert len(shards) > 1
    assert shards[0] == f"delta-00001-of-{len(shards):05d}.safetensors"
    assert (out / DELTA_INDEX).is_file()
    assert not (out / "delta.safetensors").exists()
    assert report.bytes_out == sum((out / s).stat().st_size for s in shards)
    sharded, single = load_bitdelta(out), load_bitdelta(row_delta[0])
    assert sharded.summary == single.summary
    for name, weight in single.weights.items():
        assert torch.equal(sharded.weights[name].bits, weight.bits)
        assert torch.equal(sharded.weights[name].scale, weight.scale)


def test_tensor_scale_mode(tiny_base: Path, tiny_finetune: Path, tmp_path: Path,
                           row_delta: tuple[Path, BitDeltaReport]) -> None:
    report = compress_bitdelta(tiny_base, tiny_finetune, tmp_path / "delta", scale="tensor")
    stored = tensors_of(tmp_path / "delta")
    base, finetune = tensors_of(tiny_base), tensors_of(tiny_finetune)
    row_errors = {t.name: t.error_sq for t in row_delta[1].compressed}
    for entry in report.compressed:
        scale = stored[f"{entry.name}.scale"]
        diff = finetune[entry.name].double() - base[entry.name].double()
        assert scale.shape == ()
        assert math.isclose(float(scale), float(diff.abs().mean()),
                                                  rel_tol=1e-6)
        assert row_errors[entry.name] < entry.error_sq  # one α per row fits better
    assert report.scale_mode is ScaleMode.TENSOR
    assert row_delta[1].weight_rel_error < report.weight_rel_error


def test_targets_choose_the_compressed_weights(tiny_base: Path, tiny_finetune: Path,
                                               tmp_path: Path) -> None:
    report = compress_bitdelta(tiny_base, tiny_finetune, tmp_path / "delta",
                               targets=r".*self_attn\.(q|v)_proj")
    assert sorted(t.name for t in report.compressed) == [
        f"model.layers.{i}.self_attn.{p}.weight" for i in (0, 1) for p in ("q_proj", "v_proj")]
    assert "model.layers.0.self_attn.k_proj.weight" in tensors_of(tmp_path / "delta")


def test_progress_counts_finetune_bytes_up_to_the_total(
        tiny_base: Path, tiny_finetune: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    compress_bitdelta(tiny_base, tiny_finetune, tmp_path / "delta",
                      progress=lambda done, total, item: calls.append((done, total, item)))
    with Checkpoint.open(tiny_finetune) as ckpt:
        total = sum(ckpt.entry(n).nbytes for n in ckpt.manifest.names)
        names = set(ckpt.manifest.names)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert calls[-1][0] == total
    assert {c[1] for c in calls} == {total}
    assert {c[2] for c in calls} == names


def test_mismatched_models_name_every_mismatch_and_write_nothing(
        tiny_base: Path, tiny_finetune: Path, tmp_path: Path) -> None:
    finetune = variant(tiny_finetune, tmp_path / "ft", {"model.norm.weight": None,
                                                         "lm_head.weight": torch.zeros(97, 48)})
    out = tmp_path / "delta"
    with pytest.raises(IncompatibleModels) as caught:
        compress_bitdelta(tiny_base, finetune, out)
    assert "missing tensor 'model.norm.weight'" in caught.value.detail
    assert "'lm_head.weight' has shape [97, 48], base has [96, 48]" in caught.value.detail
    assert len(caught.value.mismatches) == 2
    assert nothing_written(out)


@pytest.mark.parametrize("side", ["base", "finetune"])
@pytest.mark.parametrize("name", [LATE_WEIGHT, "model.layers.1.post_attention_layernorm.weight"])
def test_nan_is_refused_with_its_name_even_half_way(
        side: str, name: str, tiny_base: Path, tiny_finetune: Path, tmp_path: Path) -> None:
    model = tiny_base if side == "base" else tiny_finetune
    bad = tensors_of(model)[name].clone()
    bad.view(-1)[-1] = math.nan
    broken = variant(model, tmp_path / f"broken-{side}", {name: bad})
    base, finetune = (broken, tiny_finetune) if side == "base" else (tiny_base, broken)
    out = tmp_path / "delta"
    with pytest.raises(NonFiniteTensor) as caught:
        compress_bitdelta(base, finetune, out)
    assert caught.value.tensor_name == name
    assert f"broken-{side}" in caught.value.detail
    assert nothing_written(out)


def test_pickle_inputs_are_refused_and_nothing_written(tiny_base: Path, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({"w": torch.zeros(2)}, pickled / "pytorch_model.bin")
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes((pickled / "pytorch_model.bin").read_bytes())
    out = tmp_path / "delta"
    for finetune in (pickled, pickled / "pytorch_model.bin", disguised):
        with pytest.raises(PickleRefused, match="never loaded"):
            compress_bitdelta(tiny_base, finetune, out)
        assert nothing_written(out)


def test_existing_output_and_bad_scale_are_refused(tiny_base: Path, tiny_finetune: Path,
                                                   tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(OutputExists):
        compress_bitdelta(tiny_base, tiny_finetune, taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    with pytest.raises(InvalidParameter, match="scale mode"):
        compress_bitdelta(tiny_base, tiny_finetune, tmp_path / "delta", scale="column")
    assert nothing_written(tmp_path / "delta")


def test_read_buffers_stay_at_two_pairs_of_the_largest_weight(
        tiny_base: Path, tiny_finetune: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader runs ahead past small stored tensors (norms) without lending them a
    pooled buffer: a norm holding a free large buffer would make the next weight take
    a new one, and the pool would grow past the pair in use and the pair read ahead."""
    import compress.bitdelta.compression as compression
    from compress.tensorio import BufferPool

    most = [0]

    class Watched(BufferPool):
        def take(self, nbytes: int) -> torch.Tensor:
            taken = super().take(nbytes)
            most[0] = max(most[0], self.held_bytes)
            return taken

    monkeypatch.setattr(compression, "BufferPool", Watched)
    # From a source that cannot be mapped, so weights are read into the pool's buffers.
    compress_bitdelta(MemorySource.of(tiny_base), MemorySource.of(tiny_finetune),
                      tmp_path / "out", workers=1)
    with Checkpoint.open(tiny_finetune) as ckpt:
        sizes = {n: ckpt.entry(n).nbytes for n in ckpt.manifest.names}
        largest = max(size for name, size in sizes.items() if name.endswith("proj.weight"))
        assert any(size < largest for size in sizes.values())  # there are small ones
    assert 0 < most[0] <= 4 * largest  # base and fine-tune, in use and read ahead


def test_local_weights_are_mapped_not_read_and_give_what_reads_give(
        tiny_base: Path, tiny_finetune: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """From local files each weight to compress is mapped (the encoder's threads read the
    page cache), never read into a buffer; the delta and its report's sums are those of
    the same models read from a source that cannot be mapped."""
    mapped: list[str] = []
    read: list[str] = []
    real_mapped, real_tensor = Checkpoint.mapped_tensor, Checkpoint.tensor

    def record_mapped(self: Checkpoint, name: str) -> torch.Tensor | None:
        mapped.append(name)
        return real_mapped(self, name)

    def record_read(self: Checkpoint, name: str, buffer: torch.Tensor | None = None
                    ) -> torch.Tensor:
        read.append(name)
        return real_tensor(self, name, buffer)

    monkeypatch.setattr(Checkpoint, "mapped_tensor", record_mapped)
    monkeypatch.setattr(Checkpoint, "tensor", record_read)
    on_disk = compress_bitdelta(tiny_base, tiny_finetune, tmp_path / "disk", workers=2)
    compressed = {t.name for t in on_disk.tensors if t.kind == "bitdelta"}
    assert len(compressed) > 1
    assert set(mapped) == compressed
    assert mapped.count(sorted(compressed)[0]) == 2  # in the base and in the fine-tune
    assert not compressed & set(read)
    monkeypatch.undo()
    in_memory = compress_bitdelta(MemorySource.of(tiny_base), MemorySource.of(tiny_finetune),
                                  tmp_path / "memory", workers=2)
    assert [t.to_dict() for t in in_memory.tensors] == [t.to_dict() for t in on_disk.tensors]
    written = sorted(p.name for p in (tmp_path / "disk").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "memory").iterdir())
    assert "delta.safetensors" in written
    for part in written:
        if part != "report.json":  # it also holds the time taken and the models' names
            assert (tmp_path / "memory" / part).read_bytes() == (
                tmp_path / "disk" / part).read_bytes()


def test_a_failed_write_behind_the_encoder_fails_the_run_and_leaves_nothing(
        tiny_base: Path, tiny_finetune: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes run on their own thread, one job behind: a write that fails (a full disk)
    still stops the run with its own error, and no output is left."""
    from compress.tensorio import ShardedWriter

    real_write = ShardedWriter.write
    written: list[str] = []

    def write(self: ShardedWriter, name: str, tensor: torch.Tensor) -> None:
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        written.append(name)
        real_write(self, name, tensor)

    monkeypatch.setattr(ShardedWriter, "write", write)
    with pytest.raises(OSError, match="No space left"):
        compress_bitdelta(tiny_base, tiny_finetune, tmp_path / "out", workers=2)
    assert len(written) == 3
    assert nothing_written(tmp_path / "out")

