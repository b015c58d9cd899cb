"""deltahub extract-lora against mergekit-extract-lora, side by side in one run, same inputs.

Two parts (benchmarks/peers_tools.py has the inputs, the tool runs and the error maths):

a) speed, memory and error on Llama-2-7B-shaped layers (fp16, --layers, a synthetic ΔW
   with a power-law-plus-noise spectrum) at --rank: each tool's CLI as its own process
   (wall time and peak resident memory per tool), then each output's relative error per
   module ‖ΔW − B·A‖/‖ΔW‖, read back from its PEFT safetensors, beside the exact optimum at
   that rank (Eckart–Young, float64).
b) what each tool's DEFAULT output keeps of a real fine-tune (tests/finetune.py's tiny
   Llama: pretrained on prose, fine-tuned on Python) at --quality-rank: the gain kept,
   (loss_base − loss_adapter)/(loss_base − loss_ft) on held-out Python (and prose), by
   compress.quality.evaluate_quality; deltahub --targets-only for contrast.

Aims: ≥ 10× faster than mergekit, ≤ 0.5× its peak memory, error ≤ 1.01× mergekit's
(exact SVD) at the same rank, gain kept by deltahub's default ≥ mergekit's default.

mergekit lives in its own venv (it pins other transformers/peft versions than deltahub):

    python3 -m venv /tmp/mergekit-venv
    /tmp/mergekit-venv/bin/pip install torch==2.13.0   # the CPU build; unpinned pulls CUDA
    /tmp/mergekit-venv/bin/pip install mergekit==0.1.5

    python benchmarks/peers_bench.py                   # 2 layers, rank 64; quality at r 16
    python benchmarks/peers_bench.py --layers 1 --only speed
    python benchmarks/peers_bench.py --mergekit PATH/TO/mergekit-extract-lora

The 7B-shaped models are generated once under .bench/peers/ (about 0.8 GB per model per
2 layers) and reused; the fine-tune pair is quality_bench's, under .bench/finetune-pair/.
Exits 2, saying how to install it, when mergekit-extract-lora is not found.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# After the sys.path fix-up above (benchmarks/ and tests/ are not installed packages).
from benchmarks.peers_tools import (
    GNU_TIME,
    INSTALL_MERGEKIT,
    ToolRun,
    deltahub_argv,
    ensure_llama_pair,
    find_mergekit,
    mergekit_argv,
    mergekit_version,
    module_errors,
    optimal_errors,
    run_measured,
)
from compress.lora import ADAPTER_CONFIG
from compress.quality import evaluate_quality
from tests.finetune import cached_finetune_pair

BENCH = Path(__file__).resolve().parents[1] / ".bench"
SPEEDUP_AIM, MEMORY_AIM, ERROR_AIM = 10.0, 0.5, 1.01
# Two exact SVDs of the same ΔW (deltahub's on a small matrix, mergekit's) differ only by
# float round-off, which moves the gain kept by ~1e-7: a difference below this is a tie.
GAIN_TIE = 1e-4
GB = 2**30


@dataclass(frozen=True)
class SpeedResult:
    deltahub: ToolRun
    mergekit: ToolRun
    optimal: dict[str, float]
    deltahub_errors: dict[str, float]
    mergekit_errors: dict[str, float]

    def worst(self, numerator: dict[str, float], denominator: dict[str, float]) -> float:
        return max(numerator[m] / denominator[m] for m in self.optimal)


@dataclass(frozen=True)
class QualityRow:
    run: ToolRun
    adapter_bytes: int
    modules_to_save: list[str]
    gain_python: float | None
    gain_prose: float | None


def speed_part(layers: int, rank: int, mergekit: Path, scratch: Path) -> SpeedResult:
    """Part a: both CLIs on the same 7B-shaped pair, then both outputs' errors."""
    base, finetune = ensure_llama_pair(BENCH / "peers" / f"llama7b-{layers}L", layers)
    outs = {tool: scratch / f"speed-{tool}" for tool in ("deltahub", "mergekit")}
    print(f"a) {layers} Llama-7B-shaped layers at rank {rank}: deltahub ...", flush=True)
    deltahub = run_measured(deltahub_argv(base, finetune, outs["deltahub"], rank),
                            scratch / "speed-deltahub.log")
    print(f"   deltahub {deltahub.seconds:.1f} s; mergekit ...", flush=True)
    merged = run_measured(mergekit_argv(mergekit, base, finetune, outs["mergekit"], rank),
                          scratch / "speed-mergekit.log")
    print(f"   mergekit {merged.seconds:.1f} s; errors and the exact optimum ...", flush=True)
    errors = {tool: module_errors(base, finetune, out) for tool, out in outs.items()}
    if set(errors["deltahub"]) != set(errors["mergekit"]):
        raise RuntimeError(f"the tools adapted different modules: {sorted(errors['deltahub'])}"
                           f" against {sorted(errors['mergekit'])}")
    optimal = optimal_errors(base, finetune, sorted(errors["deltahub"]), rank)
    for tool, out in outs.items():
        print(f"   {tool} modules_to_save: {_saved(out)}")
    return SpeedResult(deltahub, merged, optimal, errors["deltahub"], errors["mergekit"])


def quality_part(rank: int, mergekit: Path, scratch: Path, batch_size: int,
                 max_batches: int | None) -> dict[str, QualityRow]:
    """Part b: each tool's default output on the real fine-tune, scored on held-out data."""
    pair = cached_finetune_pair(BENCH / "finetune-pair")
    variants: dict[str, Callable[[Path], list[str]]] = {
        "deltahub (default)": lambda out: deltahub_argv(pair.base, pair.finetune, out, rank),
        "deltahub --targets-only": lambda out: deltahub_argv(
            pair.base, pair.finetune, out, rank, ["--targets-only"]),
        "mergekit (default)": lambda out: mergekit_argv(mergekit, pair.base, pair.finetune,
                                                        out, rank),
    }
    rows: dict[str, QualityRow] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # quality_bench's: exact results for a thread count
    try:
        for index, (name, argv) in enumerate(variants.items()):
            out = scratch / f"quality-{index}"
            run = run_measured(argv(out), scratch / f"quality-{index}.log")
            report = evaluate_quality(pair.base, pair.finetune, out,
                                      [pair.python.heldout, pair.prose.heldout],
                                      batch_size=batch_size, seq_len=pair.recipe.seq_len,
                                      max_batches=max_batches)
            python, prose = report.datasets
            rows[name] = QualityRow(run, _adapter_bytes(out), _saved(out),
                                    python.gain_kept, prose.gain_kept)
            print(f"b) {name}: gain kept on Python {_fmt(python.gain_kept)}", flush=True)
    finally:
        torch.set_num_threads(threads)
    return rows


def _saved(adapter: Path) -> list[str]:
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    return list(config.get("modules_to_save") or [])


def _adapter_bytes(adapter: Path) -> int:
    return sum(f.stat().st_size for f in adapter.iterdir() if f.suffix == ".safetensors")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def print_speed(result: SpeedResult) -> None:
    d, m = result.deltahub, result.mergekit
    print("\n| tool | wall (s) | peak RSS (GiB) |\n|---|---:|---:|")
    print(f"| deltahub extract-lora | {d.seconds:.1f} | {d.peak_bytes / GB:.2f} |")
    print(f"| mergekit-extract-lora | {m.seconds:.1f} | {m.peak_bytes / GB:.2f} |")
    print("\n| module | optimal error | deltahub | mergekit | deltahub / optimal | "
          "deltahub / mergekit | mergekit / optimal |\n|---|---:|---:|---:|---:|---:|---:|")
    for module, best in result.optimal.items():
        dh, mk = result.deltahub_errors[module], result.mergekit_errors[module]
        print(f"| {module} | {best:.5f} | {dh:.5f} | {mk:.5f} | {dh / best:.5f} | "
              f"{dh / mk:.5f} | {mk / best:.5f} |")


def print_quality(rows: dict[str, QualityRow], rank: int) -> None:
    print(f"\n| rank {rank}, tool's default | wall (s) | adapter MB | gain kept Python | "
          "gain kept prose | modules_to_save |\n|---|---:|---:|---:|---:|---|")
    for name, row in rows.items():
        print(f"| {name} | {row.run.seconds:.1f} | {row.adapter_bytes / 1e6:.3f} | "
              f"{_fmt(row.gain_python)} | {_fmt(row.gain_prose)} | "
              f"{', '.join(row.modules_to_save) or '-'} |")


def aims(speed: SpeedResult | None, quality: dict[str, QualityRow] | None
         ) -> list[tuple[str, str, bool]]:
    """(aim, measured, met) for each aim the parts run could judge."""
    rows: list[tuple[str, str, bool]] = []
    if speed is not None:
        speedup = speed.mergekit.seconds / speed.deltahub.seconds
        memory = speed.deltahub.peak_bytes / speed.mergekit.peak_bytes
        error = speed.worst(speed.deltahub_errors, speed.mergekit_errors)
        rows += [(f"speed-up (mergekit s / deltahub s) ≥ {SPEEDUP_AIM:g}×",
                  f"{speedup:.1f}×", speedup >= SPEEDUP_AIM),
                 (f"peak memory (deltahub / mergekit) ≤ {MEMORY_AIM:g}×",
                  f"{memory:.3f}×", memory <= MEMORY_AIM),
                 (f"error (deltahub / mergekit, worst module) ≤ {ERROR_AIM:g}×",
                  f"{error:.5f}×", error <= ERROR_AIM)]
    if quality is not None:
        ours = quality["deltahub (default)"].gain_python
        theirs = quality["mergekit (default)"].gain_python
        met = ours is not None and theirs is not None and ours >= theirs - GAIN_TIE
        difference = "n/a" if ours is None or theirs is None else f"{ours - theirs:+.2e}"
        rows.append((f"gain kept on Python, deltahub default ≥ mergekit default (ties "
                     f"within {GAIN_TIE:g} count)",
                     f"{_fmt(ours)} vs {_fmt(theirs)} ({difference})", met))
    return rows


def print_aims(speed: SpeedResult | None, quality: dict[str, QualityRow] | None) -> None:
    rows = aims(speed, quality)
    print("\n| aim | measured | met |\n|---|---:|---|")
    for aim, measured, met in rows:
        print(f"| {aim} | {measured} | {'yes' if met else 'NO'} |")
    if speed is not None:
        print(f"\nworst error over optimal: deltahub "
              f"{speed.worst(speed.deltahub_errors, speed.optimal):.5f}×, mergekit "
              f"{speed.worst(speed.mergekit_errors, speed.optimal):.5f}×")
    missed = [aim for aim, _, met in rows if not met]
    print("all aims met" if not missed else f"aims NOT met: {'; '.join(missed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2, help="7B-shaped decoder layers")
    parser.add_argument("--rank", type=int, default=64, help="rank of part a")
    parser.add_argument("--quality-rank", type=int, default=16, help="rank of part b")
    parser.add_argument("--only", choices=("speed", "quality"), help="run one part")
    parser.add_argument("--mergekit", type=Path, help="the mergekit-extract-lora script "
                        "[default: /tmp/mergekit-venv/bin/, then PATH]")
    parser.add_argument("--max-batches", type=int, default=32, help="0: every row")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    mergekit = find_mergekit(args.mergekit)
    if mergekit is None:
        sys.exit("mergekit-extract-lora not found; this benchmark compares against it, so "
                 f"install it into its own venv:\n{INSTALL_MERGEKIT}\nor pass --mergekit PATH")
    if not GNU_TIME.is_file():
        sys.exit(f"{GNU_TIME} (GNU time) measures each tool's peak memory; install it "
                 "(apt-get install time)")
    print(f"mergekit, torch in its venv: {mergekit_version(mergekit)} ({mergekit}); "
          f"deltahub's torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    speed = quality = None
    with tempfile.TemporaryDirectory(prefix="peers-", dir=BENCH if BENCH.is_dir() else None
                                     ) as scratch:
        if args.only in (None, "speed"):
            speed = speed_part(args.layers, args.rank, mergekit, Path(scratch))
        if args.only in (None, "quality"):
            quality = quality_part(args.quality_rank, mergekit, Path(scratch),
                                   args.batch_size, args.max_batches or None)
    if speed is not None:
        print_speed(speed)
    if quality is not None:
        print_quality(quality, args.quality_rank)
    print_aims(speed, quality)


if __name__ == "__main__":
    main()
