"""A worker's scratch space outlives a SIGKILL only until the next worker starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from registry.infra.scratch import Scratch

_HOLD = """
import sys, time
from pathlib import Path
from registry.infra.scratch import Scratch
path = Scratch(Path(sys.argv[1]), sys.argv[2]).acquire()
(path / "job-1-1").mkdir()
(path / "job-1-1" / "delta.safetensors").write_bytes(b"x" * 1000)
print("ready", flush=True)
time.sleep(60)
"""


def _worker_holding_scratch(root: Path, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(root), name],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_killed_workers_scratch_is_removed_by_the_next_worker(tmp_path: Path) -> None:
    alive = _worker_holding_scratch(tmp_path, "alive")
    dead = _worker_holding_scratch(tmp_path, "dead")
    try:
        os.kill(dead.pid, signal.SIGKILL)
        dead.communicate(timeout=10)
        assert (tmp_path / "dead" / "job-1-1").exists()  # nothing cleaned up at death
        fresh = Scratch(tmp_path, "fresh")
        fresh.acquire()
        assert not (tmp_path / "dead").exists()
        assert (tmp_path / "alive" / "job-1-1").exists()  # a live worker's is left alone
        fresh.release()
        assert not (tmp_path / "fresh").exists()
    finally:
        alive.kill()
        alive.communicate(timeout=10)  # the lock goes with the process
    assert Scratch(tmp_path, "later").sweep() == 1  # now "alive" is gone too


def test_scratch_spaces_taken_at_once_never_sweep_each_other(tmp_path: Path) -> None:
    """Each new space sweeps its neighbours: a sweep that catches another's lock file
    between its creation and its lock must not make that owner fail (concurrent uploads
    each take one, issue 22's CI run)."""
    def take(i: int) -> bool:
        for round_ in range(40):
            space = Scratch(tmp_path, f"space-{i}-{round_}")
            path = space.acquire()
            (path / "file").write_bytes(b"x")
            space.release()
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(take, range(8)))
    assert list(tmp_path.iterdir()) == []
