"""The plugin's local cache: checked, atomic, bounded by size (least recently used goes
first, entries in use never), and shared by processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from registry.client import ChecksumMismatch
from registry.serving.vllm.cache import (
    STALE_STAGING_SECONDS,
    AdapterCache,
    CachedFile,
    CacheError,
    CacheFull,
)

REPO = Path(__file__).resolve().parents[4]


def _listing(content: bytes, name: str = "adapter_model.safetensors"
             ) -> tuple[str, list[CachedFile]]:
    """A one-file entry: its digest (any sha256 will do as the key) and listing."""
    sha = hashlib.sha256(content).hexdigest()
    return hashlib.sha256(name.encode() + content).hexdigest(), [
        CachedFile(name, sha, len(content))]


class Source:
    """Fetches from a dict of contents, counting fetches."""

    def __init__(self, *contents: bytes) -> None:
        self.by_sha = {hashlib.sha256(c).hexdigest(): c for c in contents}
        self.fetched: list[str] = []

    def __call__(self, file: CachedFile, dest: Path) -> None:
        self.fetched.append(file.filename)
        dest.write_bytes(self.by_sha[file.sha256])


def test_checkout_fetches_once_and_serves_the_files(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path, max_bytes=1000)
    digest, files = _listing(b"weights")
    source = Source(b"weights")

    first = cache.checkout(digest, files, source)
    second = cache.checkout(digest, files, source)

    assert source.fetched == ["adapter_model.safetensors"]
    assert first.path == second.path == tmp_path / "entries" / digest
    assert (first.path / "adapter_model.safetensors").read_bytes() == b"weights"


def test_a_wrong_file_installs_nothing(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path, max_bytes=1000)
    digest, files = _listing(b"weights")

    def corrupt(file: CachedFile, dest: Path) -> None:
        dest.write_bytes(b"w3ights")

    with pytest.raises(ChecksumMismatch):
        cache.checkout(digest, files, corrupt)
    assert cache.entries() == []
    assert list((tmp_path / "staging").iterdir()) == []


def test_a_fetch_that_breaks_half_way_installs_nothing(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path, max_bytes=1000)
    files = [CachedFile("adapter_config.json", hashlib.sha256(b"{}").hexdigest(), 2),
             CachedFile("adapter_model.safetensors", hashlib.sha256(b"w").hexdigest(), 1)]
    source = Source(b"{}")  # has no second file: KeyError on it

    with pytest.raises(KeyError):
        cache.checkout("a" * 64, files, source)
    assert not (tmp_path / "entries" / ("a" * 64)).exists()
    assert list((tmp_path / "staging").iterdir()) == []
    assert source.fetched == ["adapter_config.json", "adapter_model.safetensors"]


def test_least_recently_used_goes_first_and_the_bound_holds(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path, max_bytes=250)
    contents = [bytes([i]) * 100 for i in range(3)]
    source = Source(*contents)
    (a, a_files), (b, b_files), (c, c_files) = (_listing(x) for x in contents)
    cache.checkout(a, a_files, source).release()
    cache.checkout(b, b_files, source).release()
    old = time.time() - 100
    os.utime(tmp_path / "entries" / b, (old, old))  # b served long ago
    cache.checkout(a, a_files, source).release()

    cache.checkout(c, c_files, source).release()

    assert {e.digest for e in cache.entries()} == {a, c}
    assert sum(e.size for e in cache.entries()) <= 250


def test_entries_in_use_are_not_evicted(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path, max_bytes=250)
    contents = [bytes([i]) * 100 for i in range(3)]
    source = Source(*contents)
    (a, a_files), (b, b_files), (c, c_files) = (_listing(x) for x in contents)
    held_a = cache.checkout(a, a_files, source)
    held_b = cache.checkout(b, b_files, source)

    with pytest.raises(CacheFull, match="200 of the cache's 250 bytes hold adapters being "
                                        "served; raise DELTAHUB_CACHE_MAX_BYTES"):
        cache.checkout(c, c_files, source)
    assert {e.digest for e in cache.entries()} == {a, b}

    held_a.release()
    cache.checkout(c, c_files, source)
    assert {e.digest for e in cache.entries()} == {b, c}
    assert held_b.held


def test_an_adapter_larger_than_the_cache_is_refused(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path, max_bytes=10)
    digest, files = _listing(b"x" * 11)
    source = Source(b"x" * 11)

    with pytest.raises(CacheFull, match="11 bytes exceed the cache's bound of 10"):
        cache.checkout(digest, files, source)
    assert source.fetched == []


@pytest.mark.parametrize(("digest", "filename"), [
    ("../../etc", "adapter_model.safetensors"),
    ("a" * 64, "../adapter_model.safetensors"),
    ("a" * 64, "sub/adapter_model.safetensors"),
])
def test_names_that_would_leave_the_cache_are_refused(tmp_path: Path, digest: str,
                                                      filename: str) -> None:
    cache = AdapterCache(tmp_path / "cache", max_bytes=1000)
    source = Source(b"w")

    with pytest.raises(CacheError):
        cache.checkout(digest, [CachedFile(filename, hashlib.sha256(b"w").hexdigest(), 1)],
                       source)
    assert source.fetched == []
    assert list(tmp_path.rglob("*")) == []  # nothing written, inside the cache or out


def test_what_a_dead_process_left_in_staging_is_swept(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path, max_bytes=1000)
    digest, files = _listing(b"weights")
    source = Source(b"weights")
    cache.checkout(digest, files, source).release()
    left = tmp_path / "staging" / "dead.abc"
    left.mkdir()
    (left / "adapter_model.safetensors").write_bytes(b"half")
    fresh = tmp_path / "staging" / "alive.abc"
    fresh.mkdir()
    old = time.time() - STALE_STAGING_SECONDS - 10
    os.utime(left, (old, old))

    other, other_files = _listing(b"other")
    cache.checkout(other, other_files, Source(b"other"))

    assert not left.exists()
    assert fresh.exists()  # may be a fill under way in another process


_WORKER = textwrap.dedent("""
    import hashlib, os, sys, time
    from pathlib import Path
    from registry.serving.vllm.cache import AdapterCache, CachedFile

    root, log, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    content = b"shared weights"
    files = [CachedFile("adapter_model.safetensors", hashlib.sha256(content).hexdigest(),
                        len(content))]

    def fetch(file, dest):
        with log.open("a") as f:
            f.write(f"fetch {os.getpid()}\\n")
        time.sleep(1.0)
        dest.write_bytes(content)

    lease = AdapterCache(root, 1000).checkout("b" * 64, files, fetch)
    print((lease.path / "adapter_model.safetensors").read_text(), flush=True)
    if mode == "hold":
        sys.stdin.read()  # holds the entry until the test closes stdin
""")


def _worker(root: Path, log: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _WORKER, str(root), str(log), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def test_processes_on_one_disk_fetch_once_and_respect_each_others_leases(
        tmp_path: Path) -> None:
    root, log = tmp_path / "cache", tmp_path / "fetches.log"
    workers = [_worker(root, log, "hold"), _worker(root, log, "exit")]
    try:
        outputs = [w.stdout.readline().strip() for w in workers]  # type: ignore[union-attr]
        assert outputs == ["shared weights", "shared weights"]
        assert len(log.read_text().splitlines()) == 1  # one fetch between them
        workers[1].wait(timeout=30)

        # The entry the first process holds cannot make room for another in this one.
        cache = AdapterCache(root, max_bytes=20)
        other, files = _listing(b"x" * 10)
        with pytest.raises(CacheFull):
            cache.checkout(other, files, Source(b"x" * 10))
        assert [e.digest for e in cache.entries()] == ["b" * 64]
    finally:
        for w in workers:
            w.stdin.close()  # type: ignore[union-attr]
            w.wait(timeout=30)
            w.stdout.close()  # type: ignore[union-attr]

    cache.checkout(other, files, Source(b"x" * 10))  # released: now it may go
    assert [e.digest for e in cache.entries()] == [other]


def _open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def test_leases_of_one_entry_share_one_descriptor(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path, max_bytes=150)
    (a, a_files), (b, b_files) = _listing(b"a" * 100), _listing(b"b" * 100)
    source = Source(b"a" * 100, b"b" * 100)
    open_before = _open_fds()
    leases = [cache.checkout(a, a_files, source) for _ in range(50)]  # 50 names, one version

    assert _open_fds() == open_before + 1
    for lease in leases[:-1]:
        lease.release()
    with pytest.raises(CacheFull):  # the last lease still holds it
        cache.checkout(b, b_files, source)

    leases[-1].release()
    leases[-1].release()  # twice is once
    assert _open_fds() == open_before
    cache.checkout(b, b_files, source)
    assert [e.digest for e in cache.entries()] == [b]
