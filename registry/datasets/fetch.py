"""A finalized data set's files on local disk, for a worker (scale distillation, quality).

The codecs read data from paths (compress.quality.load_eval_data), so a job copies the
files out of the store first, each checked against the sha256 recorded for it: a store
that lost or changed bytes fails the job instead of feeding it other data.
"""

from __future__ import annotations

from pathlib import Path

from compress.errors import InvalidDataset
from registry.client.errors import ChecksumMismatch
from registry.client.files import sha256_of, write_checked
from registry.datasets.service import get_final_dataset
from registry.errors import DatasetChanged
from registry.infra.database import Database
from registry.infra.downloads import StoredFile
from registry.storage.base import BlobStore


def fetch_dataset_files(database: Database, store: BlobStore, name: str, dest: Path,
                        digest: str | None = None) -> list[Path]:
    """Write the files of the finalized data set `name` into `dest`; their paths, in file
    name order.

    Raises DatasetNotFound (registry/errors.py) for an unknown name or a draft, and
    InvalidDataset (a CodecError: the job's input is bad, retrying will not help) when a
    stored blob does not hash to its recorded sha256. A file already in `dest` with the
    right sha256 is kept, so a retried job copies only what it lacks; no file appears in
    `dest` until it is whole. With `digest` (what a job pinned when it was queued), a data
    set deleted and pushed again with other content since is refused (DatasetChanged).
    """
    with database.reading() as session:
        dataset = get_final_dataset(session, name)
        if digest is not None and dataset.content_digest != digest:
            raise DatasetChanged(
                f"data set {name!r} was replaced after this job was queued (digest "
                f"{digest[:12]} then, {str(dataset.content_digest)[:12]} now); queue the "
                "job again to use it")
        files = [StoredFile(f.filename, f.sha256, f.size) for f in dataset.files]
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for file in files:
        path = dest / file.filename  # a checked file name: never a directory or `..`
        if not (path.is_file() and sha256_of(path) == file.sha256):
            try:
                write_checked(path, store.read(file.sha256), file.sha256, file.filename)
            except ChecksumMismatch as exc:
                raise InvalidDataset(
                    f"{file.filename} of data set {name!r}: {exc}, as recorded; the store "
                    "lost or changed its bytes: delete the data set and push it again"
                ) from exc
        paths.append(path)
    return paths
