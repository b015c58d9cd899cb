"""ModelPair: a base and its fine-tune opened together, mismatches named, deltas in float32."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from compress.errors import IncompatibleModels, NonFiniteTensor
from compress.tensorio import ModelPair, TensorPair
from tests.models import make_finetune, make_tiny_llama

Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("pairs") / "base")


@pytest.fixture(scope="module")
def finetune(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_finetune(base, tmp_path_factory.mktemp("pairs") / "ft")


def rewrite(src: Path, dst: Path, edit: dict[str, torch.Tensor | None]) -> Path:
    """Copy model dir `src` to `dst`, replacing (or, with None, dropping) tensors."""
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    for name, value in edit.items():
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_pair_reads_both_versions_and_a_float32_delta(base: Path, finetune: Path) -> None:
    base_tensors = load_file(base / "model.safetensors")
    ft_tensors = load_file(finetune / "model.safetensors")
    with ModelPair.open(base, finetune) as pair:
        assert pair.names == sorted(base_tensors)
        assert pair.finetune_bytes == sum(t.numel() * t.element_size()
                                          for t in ft_tensors.values())
        assert pair.finetune_nbytes(Q_PROJ) == 48 * 48 * 4
        tp = pair.read(Q_PROJ)
        assert torch.equal(tp.base, base_tensors[Q_PROJ])
        assert torch.equal(tp.finetune, ft_tensors[Q_PROJ])
        delta = tp.delta()
        assert delta.dtype == torch.float32
        assert torch.equal(delta, ft_tensors[Q_PROJ] - base_tensors[Q_PROJ])
        assert tp.changed


def test_delta_is_float32_for_half_precision_inputs() -> None:
    base = torch.tensor([256.0, 1.0], dtype=torch.bfloat16)
    ft = torch.tensor([-(2.0**-8), 1.0078125], dtype=torch.bfloat16)
    delta = TensorPair("w", base, ft).delta()
    assert delta.dtype == torch.float32
    assert delta.tolist() == [-256.00390625, 0.0078125]
    assert (ft - base)[0].item() == -256.0  # what subtracting in bfloat16 would give
    fp16 = TensorPair("h", torch.tensor([65504.0], dtype=torch.float16),
                      torch.tensor([-65504.0], dtype=torch.float16))
    assert fp16.delta().tolist() == [-131008.0]  # would overflow to -inf in float16


def test_changed() -> None:
    w = torch.arange(4, dtype=torch.float16)
    assert not TensorPair("w", w, w.clone()).changed
    assert TensorPair("w", w, w.to(torch.float32)).changed  # a dtype change is a change
    bumped = w.clone()
    bumped[3] += 1
    assert TensorPair("w", w, bumped).changed


def test_bf16_pair(tmp_path: Path) -> None:
    base = make_tiny_llama(tmp_path / "b", dtype=torch.bfloat16)
    finetune = make_finetune(base, tmp_path / "f")
    with ModelPair.open(base, finetune) as pair:
        tp = pair.read(Q_PROJ)
        assert tp.base.dtype == tp.finetune.dtype == torch.bfloat16
        assert tp.delta().dtype == torch.float32
        assert torch.equal(tp.delta(), tp.finetune.float() - tp.base.float())


def test_every_missing_extra_and_reshaped_tensor_is_named(base: Path, tmp_path: Path) -> None:
    bad = rewrite(base, tmp_path / "bad", {
        "lm_head.weight": None,
        "model.norm.weight": None,
        "extra.adapter.weight": torch.zeros(2, 2),
        Q_PROJ: torch.zeros(48, 47),
    })
    with pytest.raises(IncompatibleModels) as info:
        ModelPair.open(base, bad)
    assert sorted(info.value.mismatches) == sorted([
        "missing tensor 'lm_head.weight' (base has [96, 48])",
        "missing tensor 'model.norm.weight' (base has [48])",
        f"tensor {Q_PROJ!r} has shape [48, 47], base has [48, 48]",
        "extra tensor 'extra.adapter.weight' not in the base",
    ])
    message = str(info.value)
    assert message.startswith("the fine-tune does not fit its base")
    for name in ["lm_head.weight", "model.norm.weight", Q_PROJ, "extra.adapter.weight"]:
        assert repr(name) in message


def test_nan_is_refused_with_the_tensor_name(finetune: Path, base: Path, tmp_path: Path) -> None:
    poisoned = load_file(finetune / "model.safetensors")[Q_PROJ]
    poisoned[5, 7] = float("nan")
    bad = rewrite(finetune, tmp_path / "nan", {Q_PROJ: poisoned})
    with ModelPair.open(base, bad) as pair:  # opening does not read tensor data
        pair.read("model.layers.0.self_attn.k_proj.weight")
        with pytest.raises(NonFiniteTensor) as info:
            pair.read(Q_PROJ)
    assert info.value.tensor_name == Q_PROJ
    assert "in nan" in str(info.value)  # the fine-tune's directory name


def test_inf_in_the_base_is_refused_too(finetune: Path, base: Path, tmp_path: Path) -> None:
    poisoned = load_file(base / "model.safetensors")["lm_head.weight"]
    poisoned[0, 0] = float("-inf")
    bad = rewrite(base, tmp_path / "infbase", {"lm_head.weight": poisoned})
    with ModelPair.open(bad, finetune) as pair, pytest.raises(NonFiniteTensor,
                                                              match=r"'lm_head\.weight'"):
        pair.read("lm_head.weight")


def test_close_closes_both(base: Path, finetune: Path) -> None:
    pair = ModelPair.open(base, finetune)
    pair.read(Q_PROJ)
    handles = [*pair.base._handles.values(), *pair.finetune._handles.values()]
    assert len(handles) == 2
    pair.close()
    assert all(h.closed for h in handles)
