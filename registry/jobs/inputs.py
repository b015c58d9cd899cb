"""A job's inputs: the stored files of a model, laid out as a model directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from registry.database import Database
from registry.errors import ModelNotFound
from registry.models.repository import ModelRepository
from registry.storage.base import BlobStore

# What a codec reads of a model: its weights, the shard index and config.json.
_INPUT_SUFFIXES = (".safetensors", ".json")


def fetch_model(database: Database, store: BlobStore, model_id: int, dest: Path,
                checkpoint: Callable[[], None]) -> Path:
    """Download model `model_id`'s weights and JSON files into `dest` (a new directory)."""
    with database.reading() as session:
        model = ModelRepository(session).by_id(model_id)
        if model is None:
            raise ModelNotFound(f"model {model_id} was deleted while its job waited")
        files = [(f.filename, f.sha256) for f in model.files
                 if f.filename.endswith(_INPUT_SUFFIXES)]
    dest.mkdir(parents=True)
    for filename, sha256 in files:
        checkpoint()
        store.download(sha256, dest / filename)
    return dest
