"""Checking an uploaded token file holds one chunk of it in memory, not the file widened
to int64 (issue 22: a 64 MiB uint8 `input_ids` added 590 MB to the server)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from compress.errors import InvalidDataset
from compress.modeling.data import check_data_file, read_token_rows

FILE_BYTES = 64 * 2**20

# The peak resident memory a check adds, in a fresh process (ru_maxrss: KiB on Linux).
_MEASURE = textwrap.dedent("""
    import resource, sys
    from compress.modeling.data import check_data_file
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    check_data_file(sys.argv[1], max_bytes=2**30)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
""")


@pytest.mark.slow
def test_checking_a_large_uint8_token_file_does_not_widen_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "ids.safetensors"
    ids = torch.ones((FILE_BYTES // 1024, 1024), dtype=torch.uint8)
    save_file({"input_ids": ids}, str(path))
    del ids
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    added_bytes = int(done.stdout.strip()) * 1024
    # Widened whole it is 8x the file (512 MiB) on top of the file read; in chunks, a
    # few MiB. Less than the file itself proves no full-size copy was made.
    assert added_bytes < FILE_BYTES // 2, f"the check added {added_bytes >> 20} MiB"


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
def test_a_negative_id_past_the_first_chunk_is_still_found(tmp_path: Path,
                                                          dtype: torch.dtype) -> None:
    """The chunked check sees every value, the last one of a tensor over one chunk too."""
    ids = torch.ones((3, 2**20 // 2 + 7), dtype=torch.int64)
    ids[-1, -1] = 255 if dtype is torch.uint8 else -5
    path = tmp_path / "ids.safetensors"
    save_file({"input_ids": ids.to(dtype)}, str(path))
    if dtype is torch.uint8:  # unsigned: no id is negative, and it reads as stored
        check_data_file(path)
        assert int(read_token_rows(path)[-1, -1]) == 255
        return
    with pytest.raises(InvalidDataset, match=r"negative ids \(-5\)"):
        check_data_file(path)


def test_a_zero_in_the_mask_past_the_first_chunk_is_still_found(tmp_path: Path) -> None:
    mask = torch.ones((3, 2**20 // 2 + 7), dtype=torch.int64)
    mask[-1, -1] = 0
    path = tmp_path / "ids.safetensors"
    save_file({"input_ids": torch.ones_like(mask), "attention_mask": mask}, str(path))
    with pytest.raises(InvalidDataset, match="padded"):
        check_data_file(path)
