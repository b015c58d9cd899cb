"""Build the blob store that DELTAHUB_STORAGE_URL names."""

from __future__ import annotations

from registry.settings import Settings
from registry.storage.base import BlobStore
from registry.storage.local import LocalBlobStore
from registry.storage.s3 import S3BlobStore
from registry.storage.s3.client import make_s3_client
from registry.storage.urls import local_path, s3_location, storage_scheme


def make_blob_store(settings: Settings) -> BlobStore:
    url = settings.STORAGE_URL
    if storage_scheme(url) == "file":
        return LocalBlobStore(local_path(url))
    bucket, prefix = s3_location(url)
    return S3BlobStore(make_s3_client(settings), bucket, prefix)
