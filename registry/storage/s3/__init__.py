"""Blobs in an S3-compatible bucket (AWS S3, MinIO, R2, Ceph) through boto3.

- the store (store.py): `S3BlobStore`, the BlobStore on a bucket;
- below it, each taking an `S3Bucket` (bucket.py: client, bucket, prefix, and how a
  failure reads) rather than the store: reads.py (a GetObject body, its served range),
  writer.py (the staging upload, multipart aborts), copies.py (how a commit copies);
- client.py: `make_s3_client`, the one boto3 client, built with explicit timeouts.
"""

from registry.storage.s3.bucket import S3Bucket
from registry.storage.s3.client import S3Client, make_s3_client
from registry.storage.s3.store import S3_MIN_PART_BYTES, S3BlobStore

__all__ = ["S3_MIN_PART_BYTES", "S3BlobStore", "S3Bucket", "S3Client", "make_s3_client"]
