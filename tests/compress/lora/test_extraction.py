"""LoRA extraction (compress/lora/extraction.py): the files it writes, the ranks it picks,
its refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from compress.errors import (
    IncompatibleModels,
    InvalidParameter,
    NonFiniteTensor,
    OutputExists,
)
from compress.lora import (
    REPORT_FILE,
    SPECTRA_FILE,
    check_lora_against_base,
    extract_lora,
    lora_key,
    parse_adapter_config,
    saved_module_key,
)
from compress.tensorio import Checkpoint, read_header
from tests.compress.helpers import nothing_written
from tests.compress.lora.helpers import (
    TIGHT_ERROR,
    is_target,
    make_planted_finetune,
    planted_rank,
    read_config,
    write_model,
)

KINDS = sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@pytest.fixture(scope="module")
def planted(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_planted_finetune(tiny_base, tmp_path_factory.mktemp("planted") / "planted")


def test_fixed_rank_writes_a_peft_adapter(tiny_base: Path, tiny_finetune: Path,
                                          tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    report = extract_lora(tiny_base, tiny_finetune, out, rank=4, base_model_name_or_path="tiny",
                          targets_only=True)
    config = read_config(out)
    assert config["peft_type"] == "LORA"
    assert config["task_type"] == "CAUSAL_LM"
    assert config["r"] == 4
    assert config["lora_alpha"] == 4
    assert config["rank_pattern"] == {}
    assert config["alpha_pattern"] == {}
    assert config["target_modules"] == KINDS
    assert config["base_model_name_or_path"] == "tiny"
    assert config["modules_to_save"] is None
    tensors = load_file(out / "adapter_model.safetensors")
    base = Checkpoint.open(tiny_base)
    targets = [n for n in base.manifest.names if is_target(n)]
    assert len(targets) == 14
    assert sorted(tensors) == sorted(lora_key(n.removesuffix(".weight"), part)
                                     for n in targets for part in ("lora_A", "lora_B"))
    for name in targets:
        out_f, in_f = base.manifest[name].shape
        module = name.removesuffix(".weight")
        assert tensors[lora_key(module, "lora_A")].shape == (4, in_f)
        assert tensors[lora_key(module, "lora_B")].shape == (out_f, 4)
        assert tensors[lora_key(module, "lora_A")].dtype == torch.float32
    summary = check_lora_against_base(parse_adapter_config(config),
                                      read_header(out / "adapter_model.safetensors").tensors,
                                      base.manifest)
    assert set(summary.ranks.values()) == {4}
    assert [m.rank for m in report.modules] == [4] * 14
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["adapter_config.json", "adapter_model.safetensors", REPORT_FILE, SPECTRA_FILE])


def test_factors_reproduce_the_measured_error(tiny_base: Path, tiny_finetune: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    report = extract_lora(tiny_base, tiny_finetune, out, rank=3)
    tensors = load_file(out / "adapter_model.safetensors")
    base, tuned = load_file(tiny_base / "model.safetensors"), load_file(
        tiny_finetune / "model.safetensors")
    for m in report.modules:
        delta = tuned[m.module + ".weight"] - base[m.module + ".weight"]
        approx = tensors[lora_key(m.module, "lora_B")] @ tensors[lora_key(m.module, "lora_A")]
        assert m.error == pytest.approx(float((delta - approx).norm() / delta.norm()), rel=1e-4)
        assert m.energy == pytest.approx(1 - m.error**2, abs=1e-4)


def test_target_error_finds_the_planted_ranks(tiny_base: Path, planted: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    report = extract_lora(tiny_base, planted, out, target_error=TIGHT_ERROR)
    ranks = {m.module + ".weight": m.rank for m in report.modules}
    assert ranks == {n: planted_rank(n) for n in ranks}
    assert len(ranks) == 14
    assert len(set(ranks.values())) > 2
    assert all(m.target_met and m.error <= TIGHT_ERROR for m in report.modules)
    config = parse_adapter_config(read_config(out))
    assert config.lora_alpha == config.r
    for name, rank in ranks.items():
        module = name.removesuffix(".weight")
        assert config.rank_of(module) == rank
        assert config.alpha_of(module) == rank  # scaling alpha/r = 1 for every module


@pytest.mark.parametrize("target", [0.5, 0.2])
def test_target_error_is_met_for_every_module(tiny_base: Path, tiny_finetune: Path, tmp_path: Path,
                                              target: float) -> None:
    report = extract_lora(tiny_base, tiny_finetune, tmp_path / "a", target_error=target)
    assert len(report.modules) == 14
    assert all(m.error <= target and m.target_met for m in report.modules)
    assert report.missed_target == []


def test_rank_cap_shows_in_the_report(tiny_base: Path, tiny_finetune: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    report = extract_lora(tiny_base, tiny_finetune, out, target_error=0.01, max_rank=2)
    assert {m.rank for m in report.modules} == {2}
    assert len(report.missed_target) == 14
    written = json.loads((out / REPORT_FILE).read_text())
    assert len(written["summary"]["missed_target"]) == 14
    assert all(m["target_met"] is False and m["error"] > 0.01 for m in written["modules"])


def test_report_json_describes_every_module(tiny_base: Path, tiny_finetune: Path,
                                            tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    extract_lora(tiny_base, tiny_finetune, out, rank=2)
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["mode"] == "rank"
    assert report["rank"] == 2
    module = report["modules"][0]
    assert set(module) >= {"module", "shape", "rank", "error", "energy", "bytes_in",
                           "bytes_out", "singular_values"}
    assert module["bytes_out"] == 4 * 2 * sum(module["shape"])
    sv = module["singular_values"]
    assert len(sv) >= 2
    assert sv == sorted(sv, reverse=True)
    assert (out / SPECTRA_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["summary"]["adapter_bytes"] == sum(
        p.stat().st_size for p in out.iterdir() if p.name not in (REPORT_FILE, SPECTRA_FILE))


def test_targets_only_lists_changed_non_targets_as_left_out(tiny_base: Path,
                                                             tiny_finetune: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    report = extract_lora(tiny_base, tiny_finetune, out, rank=2, targets_only=True)
    left = {c.name: c for c in report.left_out}
    assert "lm_head.weight" in left
    assert "model.embed_tokens.weight" in left
    assert "model.norm.weight" in left
    assert all("--targets-only" in c.reason and c.relative_change > 0 for c in left.values())
    assert report.saved == []
    assert not any(k.endswith("norm.weight") for k in load_file(out / "adapter_model.safetensors"))
    written = json.loads((out / REPORT_FILE).read_text())
    assert {e["tensor"] for e in written["left_out"]} == set(left)
    assert written["targets_only"] is True


def test_by_default_the_finetuned_non_targets_are_carried(tiny_base: Path, tiny_finetune: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    report = extract_lora(tiny_base, tiny_finetune, out, rank=2)
    assert report.left_out == []
    config = read_config(out)
    assert config["modules_to_save"] == sorted([
        "lm_head", "model.embed_tokens", "model.norm",
        *(f"model.layers.{i}.{n}" for i in (0, 1)
          for n in ("input_layernorm", "post_attention_layernorm"))])
    tensors = load_file(out / "adapter_model.safetensors")
    tuned = load_file(tiny_finetune / "model.safetensors")
    for name in ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(tensors[saved_module_key(name)], tuned[name])


def test_targets_only_keeps_the_same_factors(tiny_base: Path, tiny_finetune: Path,
                                             tmp_path: Path) -> None:
    """The LoRA part does not depend on what else is carried: only the saved tensors go."""
    extract_lora(tiny_base, tiny_finetune, tmp_path / "default", rank=3)
    extract_lora(tiny_base, tiny_finetune, tmp_path / "only", rank=3, targets_only=True)
    carried = load_file(tmp_path / "default" / "adapter_model.safetensors")
    only = load_file(tmp_path / "only" / "adapter_model.safetensors")
    assert set(only) == {k for k in carried if ".lora_" in k}
    assert all(torch.equal(only[k], carried[k]) for k in only)
    assert read_config(tmp_path / "only")["modules_to_save"] is None
    assert {k: v for k, v in read_config(tmp_path / "only").items() if k != "modules_to_save"} \
        == {k: v for k, v in read_config(tmp_path / "default").items()
            if k != "modules_to_save"}


def test_unchanged_non_targets_are_never_carried(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    base = {"embed.weight": torch.randn(32, 12, generator=g),
            "layers.0.q_proj.weight": torch.randn(16, 12, generator=g),
            "layers.0.norm_a.weight": torch.ones(12), "layers.0.norm_b.weight": torch.ones(12),
            "lm_head.weight": torch.randn(32, 12, generator=g)}
    tuned = dict(base)
    tuned["layers.0.q_proj.weight"] = base["layers.0.q_proj.weight"] + 0.1
    tuned["layers.0.norm_a.weight"] = base["layers.0.norm_a.weight"] * 1.5
    tuned["embed.weight"] = base["embed.weight"] + 0.01
    out = tmp_path / "out"
    report = extract_lora(write_model(tmp_path / "b", base), write_model(tmp_path / "f", tuned),
                          out, rank=2)
    assert read_config(out)["modules_to_save"] == ["embed", "layers.0.norm_a"]
    assert [c.name for c in report.changed] == ["embed.weight", "layers.0.norm_a.weight"]
    assert set(load_file(out / "adapter_model.safetensors")) == {
        saved_module_key("embed.weight"), saved_module_key("layers.0.norm_a.weight"),
        lora_key("layers.0.q_proj", "lora_A"), lora_key("layers.0.q_proj", "lora_B")}


def test_the_report_gives_bytes_and_change_per_non_target(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    base = {"embed.weight": torch.randn(32, 12, generator=g),
            "layers.0.q_proj.weight": torch.randn(16, 12, generator=g),
            "layers.0.k_proj.weight": torch.randn(16, 12, generator=g),
            "layers.0.norm.weight": torch.ones(12)}
    tuned = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    out = tmp_path / "out"
    extract_lora(write_model(tmp_path / "b", base), write_model(tmp_path / "f", tuned), out,
                 rank=2, targets=["q_proj"])
    written = json.loads((out / REPORT_FILE).read_text())
    entries = {e["tensor"]: e for e in written["saved"] + written["left_out"]}
    assert set(entries) == {"embed.weight", "layers.0.k_proj.weight", "layers.0.norm.weight"}
    for name, entry in entries.items():
        delta = tuned[name].double() - base[name].double()
        assert entry["bytes"] == base[name].nbytes
        assert entry["relative_change"] == pytest.approx(
            float(delta.norm() / base[name].double().norm()), rel=1e-9)
        assert entry["max_abs_change"] == pytest.approx(float(delta.abs().max()), rel=1e-9)
    # A layer's matrix outside narrowed targets is not carried whole by default.
    assert [e["tensor"] for e in written["left_out"]] == ["layers.0.k_proj.weight"]
    assert "add it to the targets" in written["left_out"][0]["reason"]
    assert written["summary"]["saved_bytes"] == base["embed.weight"].nbytes + 12 * 4
    assert written["summary"]["left_out_bytes"] == base["layers.0.k_proj.weight"].nbytes


def test_tensors_peft_cannot_carry_are_left_out_with_reasons(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    base = {"layers.0.q_proj.weight": torch.randn(16, 12, generator=g),
            "layers.0.q_proj.bias": torch.randn(16, generator=g),
            "layers.0.norm.weight": torch.ones(12), "logit_scale": torch.ones(1)}
    tuned = {k: v + 0.1 for k, v in base.items()}
    report = extract_lora(write_model(tmp_path / "b", base), write_model(tmp_path / "f", tuned),
                          tmp_path / "out", rank=2)
    reasons = {c.name: c.reason for c in report.left_out}
    assert set(reasons) == {"layers.0.q_proj.bias", "logit_scale"}
    assert reasons["layers.0.q_proj.bias"].startswith("in a LoRA target module")
    assert reasons["logit_scale"].startswith("outside any module")
    assert [c.name for c in report.saved] == ["layers.0.norm.weight"]


def test_unchanged_target_is_not_adapted(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    base = {f"layers.{i}.q_proj.weight": torch.randn(16, 12, generator=g) for i in range(3)}
    tuned = dict(base)
    tuned["layers.1.q_proj.weight"] = base["layers.1.q_proj.weight"] + 0.1
    out = tmp_path / "out"
    report = extract_lora(write_model(tmp_path / "b", base), write_model(tmp_path / "f", tuned),
                          out, target_error=0.1)
    assert [m.module for m in report.modules] == ["layers.1.q_proj"]
    assert report.unchanged == ["layers.0.q_proj", "layers.2.q_proj"]
    # "q_proj" would also adapt the unchanged modules, so the names are spelled out.
    assert read_config(out)["target_modules"] == ["layers.1.q_proj"]
    assert report.modules[0].rank == 1  # a constant shift is rank one


def test_finetune_dtype_factors(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 48, generator=g)
    delta = torch.randn(64, 3, generator=g) @ torch.randn(3, 48, generator=g) * 0.1
    base = write_model(tmp_path / "b", {"l.q_proj.weight": w.bfloat16()})
    tuned = write_model(tmp_path / "f", {"l.q_proj.weight": (w + delta).bfloat16()})
    report = extract_lora(base, tuned, tmp_path / "out", rank=3, factor_dtype="finetune")
    tensors = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert 1e-4 < report.modules[0].error < 0.05  # bf16 inputs and factors, honestly measured


def test_mismatched_models_write_nothing(tiny_base: Path, tmp_path: Path) -> None:
    other = write_model(tmp_path / "other", {"lm_head.weight": torch.zeros(96, 40)})
    out = tmp_path / "out"
    with pytest.raises(IncompatibleModels, match=r"lm_head\.weight") as info:
        extract_lora(tiny_base, other, out, rank=2)
    assert any("missing tensor" in m for m in info.value.mismatches)
    assert nothing_written(out)


def test_nan_weight_is_refused_by_name(tiny_base: Path, tiny_finetune: Path,
                                       tmp_path: Path) -> None:
    tensors = load_file(tiny_finetune / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"][3, 5] = float("nan")
    bad = write_model(tmp_path / "nan", tensors)
    out = tmp_path / "out"
    with pytest.raises(NonFiniteTensor, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        extract_lora(tiny_base, bad, out, rank=2)
    assert nothing_written(out)


def test_rank_larger_than_a_matrix_writes_nothing(tiny_base: Path, tiny_finetune: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidParameter, match=r"rank 30 exceeds min\(out, in\).*k_proj"):
        extract_lora(tiny_base, tiny_finetune, out, rank=30)  # k_proj is 24×48
    assert nothing_written(out)


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_target_error_outside_zero_one_writes_nothing(tiny_base: Path, tiny_finetune: Path,
                                                      tmp_path: Path,
                                                     target: float) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidParameter, match="strictly between 0 and 1"):
        extract_lora(tiny_base, tiny_finetune, out, target_error=target)
    assert nothing_written(out)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rank": 2, "target_error": 0.1}, "exactly one"),
    ({}, "exactly one"),
    ({"rank": 2, "max_rank": 8}, "only applies with target_error"),
    ({"rank": 0}, "positive integer"),
    ({"target_error": 0.1, "max_rank": 0}, "positive integer"),
])
def test_bad_rank_rules_are_refused(tiny_base: Path, tiny_finetune: Path, tmp_path: Path,
                                    kwargs: dict[str, float], message: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidParameter, match=message):
        extract_lora(tiny_base, tiny_finetune, out, **kwargs)  # type: ignore[arg-type]
    assert nothing_written(out)


def test_identical_models_have_nothing_to_extract(tiny_base: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidParameter, match="nothing to extract"):
        extract_lora(tiny_base, tiny_base, out, rank=2)
    assert nothing_written(out)


def test_existing_output_is_never_overwritten(tiny_base: Path, tiny_finetune: Path,
                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExists):
        extract_lora(tiny_base, tiny_finetune, out, rank=2)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_sharded_finetune_gives_the_same_adapter(tiny_base: Path, tiny_finetune: Path,
                                                 tiny_sharded_finetune: Path,
                                                 tmp_path: Path) -> None:
    extract_lora(tiny_base, tiny_finetune, tmp_path / "one", rank=3)
    extract_lora(tiny_base, tiny_sharded_finetune, tmp_path / "three", rank=3)
    one = load_file(tmp_path / "one" / "adapter_model.safetensors")
    three = load_file(tmp_path / "three" / "adapter_model.safetensors")
    assert one.keys() == three.keys()
    assert all(torch.equal(one[k], three[k]) for k in one)


def test_progress_reports_every_fine_tune_byte(tiny_base: Path, tiny_finetune: Path,
                                               tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    report = extract_lora(tiny_base, tiny_finetune, tmp_path / "a", rank=2,
                          progress=lambda done, total, item: calls.append((done, total, item)))
    assert calls[-1][0] == calls[-1][1] == report.finetune_bytes
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert len(calls) == 21  # one per tensor of the tiny Llama
