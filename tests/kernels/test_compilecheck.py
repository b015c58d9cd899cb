"""Compiled-mode checks without a GPU: every kernel variant the dispatcher can choose, compiled
for sm_80 and sm_90 with Triton's own toolchain, fits the block's shared memory, spills no
registers, and does not recompile for new M or T.

They run `python -m kernels.compilecheck` in a subprocess: the suite sets TRITON_INTERPRET for
the parity tests, and kernels built for the interpreter cannot be compiled.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels.configs import DECODE_MAX_ROWS, DTYPES, dispatch_variants, select_config

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_ENV = "DELTAHUB_TEST_ARTIFACTS"  # where to keep the table (CI artifacts)

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="triton is not installed")


def _compilecheck(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences Triton 3.9's notice; default
    return subprocess.run([sys.executable, "-m", "kernels.compilecheck", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1200, check=False)


@needs_triton
@pytest.mark.slow
def test_every_dispatched_variant_compiles_fits_and_does_not_spill(tmp_path: Path) -> None:
    done = _compilecheck("--json")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert results, f"no results; stderr:\n{done.stderr[-4000:]}"
    table = Path(os.environ.get(ARTIFACTS_ENV, tmp_path)) / "compile-check.jsonl"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(done.stdout)

    variants = {r["variant"] for r in results}
    assert len(variants) == len(list(dispatch_variants()))
    for variant in variants:
        assert {r["target"] for r in results if r["variant"] == variant} == {"sm_80", "sm_90"}
    failed = [r for r in results if not r["ok"]]
    assert not failed, "\n".join(
        f"{r['variant']} on {r['target']}: {r['error'] or ''} registers={r['registers']} "
        f"spills={r['spills']} B, shared={r['shared_bytes']} of {r['shared_limit']} B"
        for r in failed)
    assert done.returncode == 0, done.stderr[-4000:]
    for r in results:  # recorded, and plausible: a kernel uses registers
        assert 0 < r["registers"] <= 255


@needs_triton
@pytest.mark.slow
def test_new_rows_and_tenants_do_not_recompile() -> None:
    done = _compilecheck("--recompiles")
    assert done.returncode == 0, done.stderr[-4000:]
    per_config = json.loads(done.stdout.strip().splitlines()[-1])
    # Several launches at different M and T map to each of these configs; each compiled once.
    assert len(per_config) >= 3
    assert all(count == 1 for count in per_config.values()), per_config


def test_dispatch_only_chooses_listed_variants() -> None:
    """The compile check covers everything: no (M, T, dtype) picks a config outside the list."""
    listed = {(v.dtype, v.segmented, v.config) for v in dispatch_variants()}
    for dtype in DTYPES:
        for m in range(1, 300, 7):
            assert (dtype, False, select_config(m, m, dtype=dtype)) in listed
            for rows in {1, 2, DECODE_MAX_ROWS, DECODE_MAX_ROWS + 1, 16, 33, 200}:
                chosen = select_config(m, min(rows, m), segmented=True, dtype=dtype)
                assert (dtype, True, chosen) in listed


def test_fp32_prefill_has_tiles_of_its_own() -> None:
    """IEEE fp32 dots need smaller tiles than fp16 (the fp16 ones spill or overflow smem)."""
    assert (select_config(512, 512, dtype=torch.float32)
            != select_config(512, 512, dtype=torch.float16))
