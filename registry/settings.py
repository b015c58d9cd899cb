"""All configuration, from `DELTAHUB_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = "deltahub-data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DELTAHUB_", env_file=".env", extra="ignore")

    # sqlite:///./deltahub-data/deltahub.db or postgresql+psycopg://user@host/db
    DATABASE_URL: str = f"sqlite:///./{DEFAULT_DATA_DIR}/deltahub.db"
    # file:///abs/dir, file:./relative/dir, or s3://bucket/prefix
    STORAGE_URL: str = f"file:./{DEFAULT_DATA_DIR}/blobs"

    S3_ENDPOINT_URL: str | None = None  # unset: AWS; set for MinIO, R2, Ceph, moto
    S3_REGION: str = "us-east-1"
    S3_ACCESS_KEY_ID: str | None = None  # unset: boto3's usual credential chain
    S3_SECRET_ACCESS_KEY: str | None = None
    S3_CONNECT_TIMEOUT_SECONDS: float = 5.0
    S3_READ_TIMEOUT_SECONDS: float = 60.0
    S3_MAX_ATTEMPTS: int = 5

    MAX_UPLOAD_BYTES: int = Field(default=50 * 10**9, gt=0)  # one file; a 7B shard is ~5 GB
    MAX_JSON_BYTES: int = Field(default=16 * 2**20, gt=0)  # config and index files
    MAX_REQUEST_BYTES: int = Field(default=2**20, gt=0)  # any other request body (JSON)
    MAX_PAGE_SIZE: int = Field(default=100, gt=0)
    DEFAULT_PAGE_SIZE: int = Field(default=20, gt=0)

    # Staging leftovers and unreferenced blobs younger than this are never collected,
    # so an upload in flight cannot lose its object to a concurrent collection.
    GC_GRACE_SECONDS: int = Field(default=24 * 3600, ge=0)

    HOST: str = "127.0.0.1"
    PORT: int = 8000


@lru_cache
def get_settings() -> Settings:
    return Settings()
