"""Gain kept by each codec on a real fine-tune: BitDelta (row and tensor scales, with and
without α distillation) and LoRA.

The fine-tune is tests/finetune.py's: a tiny byte-level Llama pretrained on English prose
(pydoc topics) and fine-tuned on Python (stdlib files), built once and cached under
.bench/finetune-pair/. Each variant is made with the codecs' own API and scored by
`compress.quality.evaluate_quality` on held-out Python (the fine-tune's domain: the
headline) and held-out prose (the base's domain), one model in memory at a time.
Printed: loss of base, fine-tune and variant per data set, and gain kept
= (loss_base − loss_variant) / (loss_base − loss_ft), with the variant's size.

Distillation (compress/bitdelta/distill.py) calibrates on the training rows of either
domain: Python (the fine-tune's) or prose (the base's), never the held-out rows scored
here; once with the paper's settings (lr 1e-4, 200 steps of 4 rows) and once with the
settings tests/compress/bitdelta/test_distill_quality.py uses on this tiny model.

    python benchmarks/quality_bench.py                 # 32 batches of 16 × 64 tokens a set
    python benchmarks/quality_bench.py --max-batches 0 # every held-out row
    python benchmarks/quality_bench.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# After the sys.path fix-up above (tests/ is not an installed package).
from compress.bitdelta import DistillConfig, compress_bitdelta, distill_bitdelta
from compress.lora import extract_lora
from compress.quality import QualityReport, evaluate_quality
from tests.finetune import FinetunePair, cached_finetune_pair

CACHE = Path(__file__).resolve().parents[1] / ".bench" / "finetune-pair"
PAPER = DistillConfig(loss="mse")  # the BitDelta paper's settings, its loss included
TUNED = DistillConfig(steps=500, lr=1e-3, batch_size=8)  # the test's, for a 2-layer model


def variants(pair: FinetunePair) -> dict[str, Callable[[Path], object]]:
    """How each variant is made, by its name in the table."""
    def lora(rank: int, targets_only: bool = False) -> Callable[[Path], object]:
        return lambda out: extract_lora(pair.base, pair.finetune, out, rank=rank,
                                        targets_only=targets_only)

    def distilled(data: Path, config: DistillConfig) -> Callable[[Path], object]:
        def make(out: Path) -> object:
            plain = out.with_name(out.name + "-undistilled")
            compress_bitdelta(pair.base, pair.finetune, plain)
            return distill_bitdelta(pair.base, pair.finetune, plain, [data], out, config=config)
        return make

    return {
        "bitdelta (row α)": lambda out: compress_bitdelta(pair.base, pair.finetune, out),
        "bitdelta + distilled α, Python, paper (mse, lr 1e-4, 200 × 4)":
            distilled(pair.python.train, PAPER),
        "bitdelta + distilled α, Python, kl (paper's lr and steps)":
            distilled(pair.python.train, DistillConfig()),
        "bitdelta + distilled α, Python, kl, lr 1e-3, 500 × 8": distilled(pair.python.train,
                                                                        TUNED),
        "bitdelta + distilled α, prose, kl, lr 1e-3, 500 × 8": distilled(pair.prose.train,
                                                                       TUNED),
        "bitdelta (tensor α)": lambda out: compress_bitdelta(pair.base, pair.finetune, out,
                                                             scale="tensor"),
        "lora r4 --targets-only": lora(4, targets_only=True),
        "lora r16 --targets-only": lora(16, targets_only=True),
        "lora r16 (default: norms, embeddings, lm_head carried)": lora(16),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-batches", type=int, default=32, help="0: every row")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write every report here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the recipe's: results are exact for a thread count

    started = time.perf_counter()
    pair = cached_finetune_pair(CACHE)
    print(f"fine-tune pair: {pair.root} ({time.perf_counter() - started:.1f} s)\n")
    data = [pair.python.heldout, pair.prose.heldout]
    reports: dict[str, QualityReport] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, make in variants(pair).items():
            out = Path(scratch) / name.replace(" ", "_")
            make(out)
            sizes[name] = sum(f.stat().st_size for f in out.iterdir()
                              if f.suffix == ".safetensors")
            reports[name] = evaluate_quality(
                pair.base, pair.finetune, out, data, batch_size=args.batch_size,
                seq_len=pair.recipe.seq_len, max_batches=args.max_batches or None)
    print_table(reports, sizes, (pair.finetune / "model.safetensors").stat().st_size)
    if args.json:
        args.json.write_text(json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=2))


def print_table(reports: dict[str, QualityReport], sizes: dict[str, int],
                finetune_bytes: int) -> None:
    first = next(iter(reports.values()))
    python, prose = first.datasets
    print(f"held-out Python: {python.rows} rows × {python.seq_len}; held-out prose: "
          f"{prose.rows} rows × {prose.seq_len}")
    print(f"loss (nats/byte): base {python.base.loss:.4f} / fine-tune {python.finetune.loss:.4f}"
          f" on Python; base {prose.base.loss:.4f} / fine-tune {prose.finetune.loss:.4f} on "
          "prose\n")
    # Which way the fine-tune moved each set: where it regressed, a higher gain kept keeps
    # more of the regression (docs/architecture.md, "Gain kept").
    print(f"| variant | size / fine-tune | loss Python | gain kept Python ({python.change}) "
          f"| loss prose | gain kept prose ({prose.change}) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, report in reports.items():
        py, pr = report.datasets
        print(f"| {name} | {sizes[name] / finetune_bytes:.3f} | {py.compressed.loss:.4f} | "
              f"{_ratio(py.gain_kept)} | {pr.compressed.loss:.4f} | {_ratio(pr.gain_kept)} |")


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
