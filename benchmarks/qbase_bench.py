"""Gain kept by a BitDelta job against a bitsandbytes 4-bit base, beside the same job
against the fp16 base it was quantized from.

The fine-tune is tests/finetune.py's tiny real one (cached under .bench/finetune-pair/),
stored in fp16 here; its base is quantized to NF4 and FP4 (double quant on) with
bitsandbytes' own quantizer, laid out as transformers saves it (tests/models.py). Each
delta is taken against the base it names (the 4-bit one read dequantized) and scored by
`compress.quality.evaluate_quality` on held-out Python (the fine-tune's domain).
Printed per base: its own loss, base + delta's loss, the gain kept against that base
(what a job reports), and against the fp16 base (the fine-tune's real starting point).

    python benchmarks/qbase_bench.py                   # 32 batches of 16 × 64 tokens
    python benchmarks/qbase_bench.py --max-batches 0   # every held-out row
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# After the sys.path fix-up above (tests/ is not an installed package).
from compress.bitdelta import compress_bitdelta
from compress.quality import evaluate_quality, gain_kept
from tests.finetune import cached_finetune_pair
from tests.models import make_bnb4bit

CACHE = Path(__file__).resolve().parents[1] / ".bench" / "finetune-pair"


def fp16_copy(src: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for path in src.iterdir():
        if path.suffix == ".safetensors":
            save_file({k: v.half() if v.is_floating_point() else v
                       for k, v in load_file(path).items()}, out / path.name,
                      metadata={"format": "pt"})
        elif path.is_file():
            (out / path.name).write_bytes(path.read_bytes())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-batches", type=int, default=32, help="0: every row")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the recipe's: results are exact for a thread count

    pair = cached_finetune_pair(CACHE)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        base16 = fp16_copy(pair.base, root / "base-fp16")
        ft16 = fp16_copy(pair.finetune, root / "ft-fp16")
        bases = {"fp16": base16,
                 "nf4 (double quant)": make_bnb4bit(base16, root / "nf4", "nf4", True),
                 "fp4 (double quant)": make_bnb4bit(base16, root / "fp4", "fp4", True)}
        rows: list[tuple[str, float, float, float, float | None, float | None, int]] = []
        reference: float | None = None
        for label, base in bases.items():
            started = time.perf_counter()
            delta = root / f"delta-{label.split()[0]}"
            compress_bitdelta(base, ft16, delta)
            report = evaluate_quality(base, ft16, delta, [pair.python.heldout],
                                      batch_size=args.batch_size, seq_len=pair.recipe.seq_len,
                                      max_batches=args.max_batches or None)
            python = report.datasets[0]
            reference = python.base.loss if reference is None else reference
            rows.append((label, python.base.loss, python.finetune.loss, python.compressed.loss,
                         python.gain_kept,
                         gain_kept(reference, python.finetune.loss, python.compressed.loss),
                         (base / "model.safetensors").stat().st_size))
            print(f"{label}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    print(f"held-out Python: {report.datasets[0].rows} rows × {pair.recipe.seq_len} tokens; "
          f"fine-tune loss {rows[0][2]:.4f} nats/byte\n")
    print("| base the job names | base size | loss of base | loss of base + delta | "
          "gain kept vs that base | gain kept vs fp16 base |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, base_loss, _, loss, kept, kept16, size in rows:
        print(f"| {label} | {size / 1e6:.2f} MB | {base_loss:.4f} | {loss:.4f} | "
              f"{_ratio(kept)} | {_ratio(kept16)} |")


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
