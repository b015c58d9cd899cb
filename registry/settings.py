"""All configuration, from `DELTAHUB_*` environment variables (or a `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.storage.urls import storage_scheme

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
    # A safetensors header is JSON describing the tensors (Llama-2-70B's largest shard
    # has ~100 KB); anything far beyond that is an attack on memory, not a model.
    MAX_HEADER_BYTES: int = Field(default=8 * 2**20, gt=0)
    MAX_JSON_DEPTH: int = Field(default=64, gt=0)  # nesting of any JSON a client sends
    # A pushed report.json is kept (as the adapter's quality) only up to this size; our own
    # BitDelta report lists every tensor (~310 B each: ~0.3 MB for a 405B model).
    MAX_REPORT_BYTES: int = Field(default=2 * 2**20, gt=0)
    # A pushed picture (a codec's PNG plot, e.g. LoRA's spectra.png: ~100 KB).
    MAX_PICTURE_BYTES: int = Field(default=4 * 2**20, gt=0)
    # One data set file (text, JSON lines or token ids). The same default as the codecs'
    # compress.quality.DEFAULT_MAX_DATA_BYTES, so whatever the registry stores, an
    # evaluation or a distillation reads; calibration needs far less (~800 × 128 tokens).
    MAX_DATASET_BYTES: int = Field(default=256 * 2**20, gt=0)
    # An upload that sends no byte for this long is cut off (408) and its staging removed.
    UPLOAD_IDLE_TIMEOUT_SECONDS: float = Field(default=60.0, gt=0)

    # Database concurrency. Each request runs its SQL in one worker thread holding one
    # pooled connection; these bound how many do at once, and the pool is sized to fit
    # them, so a request never waits on the pool. SQLite allows one writer at a time.
    # More reader threads than this buy nothing in one CPU-bound Python process and
    # starve the writer of the GIL (docs/benchmarks.md, "Load"); scale with processes.
    DB_READERS: int = Field(default=8, gt=0)
    DB_WRITERS: int = Field(default=4, gt=0)  # always 1 on SQLite
    # How long a request may wait for its turn at the database, and how long a statement
    # may wait on a lock (SQLite busy timeout, PostgreSQL lock_timeout), before a 503.
    DB_QUEUE_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    DB_LOCK_TIMEOUT_SECONDS: float = Field(default=5.0, gt=0)
    RETRY_AFTER_SECONDS: int = Field(default=2, gt=0)  # sent with every 503

    # Staging leftovers and unreferenced blobs younger than this are never collected,
    # so an upload in flight cannot lose its object to a concurrent collection.
    GC_GRACE_SECONDS: int = Field(default=24 * 3600, ge=0)
    # A pending draft no push has touched (created, resumed, a file upload started or
    # recorded) for this long is abandoned: `deltahub gc` removes it and its blobs.
    DRAFT_TTL_SECONDS: int = Field(default=24 * 3600, gt=0)

    # Compression jobs (registry/jobs/). A worker holds a job for JOB_LEASE_SECONDS and
    # renews the lease every third of it; a worker that dies lets it expire, and another
    # worker takes the job over. Transient failures retry after 5 s, 10 s, 20 s, ...
    JOB_LEASE_SECONDS: float = Field(default=30.0, gt=0)
    JOB_MAX_ATTEMPTS: int = Field(default=3, gt=0)
    JOB_RETRY_BASE_SECONDS: float = Field(default=5.0, ge=0)
    JOB_POLL_SECONDS: float = Field(default=1.0, gt=0)
    # Worker threads `deltahub serve` runs in-process (0: leave jobs to `deltahub worker`).
    EMBEDDED_WORKERS: int = Field(default=1, ge=0)
    # Scratch space for a job's output before it is uploaded (removed after each job).
    WORK_DIR: str = f"./{DEFAULT_DATA_DIR}/work"

    # Web pages (registry/ui/) and /metrics (registry/infra/metrics.py). The key signs page
    # sessions and CSRF tokens; unset, each server process draws a random one (sign-ins
    # then end when it restarts, and do not carry across replicas: set one for those).
    SESSION_SECRET: str | None = Field(default=None, min_length=32)
    SESSION_MAX_AGE_SECONDS: int = Field(default=12 * 3600, gt=0)
    METRICS_PUBLIC: bool = False  # true: /metrics answers without a token

    # Compression jobs: what one job may ask of a worker, and how many one token may have
    # waiting (registry/jobs/footprint.py estimates a job against these at enqueue).
    # Scratch disk: the fine-tune's logits a distillation keeps (steps x batch x seq_len
    # x vocab in float16), the data sets fetched and the codec's output.
    JOB_MAX_SCRATCH_BYTES: int = Field(default=32 * 2**30, gt=0)
    # Memory: one model computing in float32 plus the batches' logits (distill, evaluate).
    JOB_MAX_MEMORY_BYTES: int = Field(default=64 * 2**30, gt=0)
    JOB_MAX_DISTILL_STEPS: int = Field(default=10_000, gt=0)
    MAX_QUEUED_JOBS_PER_TOKEN: int = Field(default=32, gt=0)  # queued + running
    QUEUE_FULL_RETRY_AFTER_SECONDS: int = Field(default=60, gt=0)  # sent with its 429

    HOST: str = "127.0.0.1"
    PORT: int = Field(default=8000, ge=1, le=65535)
    # How long an idle keep-alive connection stays open. Longer than the idle expiry of
    # common client pools (httpx 5 s, aiohttp 15 s) and load balancers (60 s): whichever
    # side closes first must be the client, or a request sent as the server closes is lost
    # ("server disconnected without a response"). uvicorn's own default is 5 s.
    KEEP_ALIVE_SECONDS: int = Field(default=65, ge=1, le=3600)

    # Quality reports and their plots (registry/adapters/contents.py, registry/ui/plots.py).
    # Every string and key in a pushed report.json, and every array and object in it, is
    # held to these at finalize (422 InvalidReport): a path is under 4,096 characters, and
    # a model has far fewer tensors than 65,536.
    MAX_REPORT_STRING_CHARS: int = Field(default=4096, gt=0)
    MAX_REPORT_ITEMS: int = Field(default=65536, gt=0)
    # Plot pictures drawn at once (each a CPU-bound matplotlib render); a request for one
    # more that is not being drawn already gets a 503 with Retry-After.
    MAX_PLOT_RENDERS: int = Field(default=4, gt=0)

    # Data sets and uploads (issue 22). A data set file is checked whole once it has
    # arrived (text decoded, JSON lines parsed: a few times the file in memory); at most
    # this many such checks run at once in one server process, and an upload that finds
    # every slot taken for CONTENT_CHECK_WAIT_SECONDS answers 503 with Retry-After.
    MAX_CONCURRENT_CONTENT_CHECKS: int = Field(default=2, gt=0)
    CONTENT_CHECK_WAIT_SECONDS: float = Field(default=5.0, ge=0)

    # The event feed (registry/events/). `deltahub gc` deletes events older than this; a
    # follower whose cursor is older gets 410 and must resynchronise.
    EVENT_RETENTION_DAYS: float = Field(default=7.0, gt=0)
    # SQLite has no LISTEN/NOTIFY: one shared check of the newest event id this often
    # wakes a server process's long-polls (only while some are waiting).
    EVENTS_POLL_SECONDS: float = Field(default=0.2, gt=0)
    # The longest `GET /events?wait=` may hold a request (more is a 422); under the idle
    # timeouts of the usual proxies (60 s).
    EVENTS_MAX_WAIT_SECONDS: float = Field(default=30.0, gt=0)

    # Signed webhooks (registry/webhooks/). Targets resolving to loopback, private,
    # link-local, multicast or metadata addresses are refused unless this is true (a
    # registry on a private network delivering to its neighbours; tests).
    WEBHOOK_ALLOW_PRIVATE: bool = False
    # Seconds before each attempt, the first one included: when the last fails, the
    # webhook is disabled. Delays get +-20% jitter; a Retry-After longer wins.
    WEBHOOK_RETRY_SCHEDULE: str = Field(default="0,5,300,1800,7200,18000,36000",
                                        pattern=r"^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$")
    WEBHOOK_CONNECT_TIMEOUT_SECONDS: float = Field(default=5.0, gt=0)
    # One attempt, connect to the last byte read, is cut off after this long.
    WEBHOOK_TIMEOUT_SECONDS: float = Field(default=15.0, gt=0)
    # Of a receiver's answer at most this much is read (its start is kept in the log).
    WEBHOOK_MAX_RESPONSE_BYTES: int = Field(default=64 * 1024, gt=0)
    # A dispatcher holds a webhook this long, renewed after each delivery; one that dies
    # lets it expire and another resends what it had not recorded (same webhook-id).
    WEBHOOK_LEASE_SECONDS: float = Field(default=60.0, gt=0)
    # Dispatcher threads per `deltahub worker` and per `deltahub serve` (0: none there):
    # each serves one webhook at a time, so a slow receiver holds one thread only.
    WEBHOOK_DISPATCHERS: int = Field(default=4, ge=0)
    WEBHOOK_POLL_SECONDS: float = Field(default=0.5, gt=0)
    # After a secret rotation, deliveries carry both signatures this long.
    WEBHOOK_SECRET_GRACE_SECONDS: float = Field(default=24 * 3600.0, ge=0)
    # Keep drawn plots under WORK_DIR/plots by content key too, so a restart (or another
    # process on this host) does not draw them again; false: in memory only.
    PLOT_CACHE_ON_DISK: bool = True

    # `deltahub serve` (registry/cli/supervisor.py). API server processes, sharing one
    # listening socket; unset: one per CPU core this process may run on. With more than
    # one, a supervisor process starts them (and one job process for EMBEDDED_WORKERS),
    # restarts one that dies, and stops them all on SIGTERM or SIGINT.
    WORKERS: int | None = Field(default=None, gt=0)
    # On SIGTERM/SIGINT, requests in flight (uploads included) get this long to finish;
    # then they are cut (an upload's staging object is removed) and the server exits.
    SHUTDOWN_TIMEOUT_SECONDS: int = Field(default=30, gt=0)
    # Bytes of change-tagged answers (adapter listings) each API process keeps, so that
    # pollers repeating a listing between two changes cost a token check
    # (registry/infra/conditional.py); 0 keeps none.
    ANSWER_CACHE_BYTES: int = Field(default=16 * 1024 * 1024, ge=0)

    @property
    def webhook_retry_schedule(self) -> list[float]:
        return [float(x) for x in self.WEBHOOK_RETRY_SCHEDULE.split(",")]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.DEFAULT_PAGE_SIZE > self.MAX_PAGE_SIZE:
            raise ValueError(
                f"DELTAHUB_DEFAULT_PAGE_SIZE ({self.DEFAULT_PAGE_SIZE}) is over "
                f"DELTAHUB_MAX_PAGE_SIZE ({self.MAX_PAGE_SIZE}); lower it or raise the cap")
        storage_scheme(self.STORAGE_URL)  # a ValueError naming DELTAHUB_STORAGE_URL
        if self.DRAFT_TTL_SECONDS < self.UPLOAD_IDLE_TIMEOUT_SECONDS:
            # Touches come at an upload's start and end; a TTL shorter than one silent
            # stretch of an upload would let gc take a draft mid-upload.
            raise ValueError(
                f"DELTAHUB_DRAFT_TTL_SECONDS ({self.DRAFT_TTL_SECONDS}) is under "
                f"DELTAHUB_UPLOAD_IDLE_TIMEOUT_SECONDS ({self.UPLOAD_IDLE_TIMEOUT_SECONDS:g}); "
                "raise it: a draft must outlive a pause in its upload (hours is usual)")
        if (self.S3_ACCESS_KEY_ID is None) != (self.S3_SECRET_ACCESS_KEY is None):
            given, missing = (("DELTAHUB_S3_ACCESS_KEY_ID", "DELTAHUB_S3_SECRET_ACCESS_KEY")
                              if self.S3_SECRET_ACCESS_KEY is None else
                              ("DELTAHUB_S3_SECRET_ACCESS_KEY", "DELTAHUB_S3_ACCESS_KEY_ID"))
            raise ValueError(f"{given} is set but {missing} is not; set both, or neither to "
                             "use boto3's usual credential chain (environment, profile, role)")
        if self.S3_ENDPOINT_URL is not None and not self.S3_ENDPOINT_URL.startswith(
                ("http://", "https://")):
            raise ValueError(f"DELTAHUB_S3_ENDPOINT_URL={self.S3_ENDPOINT_URL!r} must be an "
                             "http:// or https:// URL, e.g. http://127.0.0.1:9000 for MinIO")
        if self.WEBHOOK_LEASE_SECONDS <= self.WEBHOOK_TIMEOUT_SECONDS:
            raise ValueError(
                f"DELTAHUB_WEBHOOK_LEASE_SECONDS ({self.WEBHOOK_LEASE_SECONDS:g}) must be over "
                f"DELTAHUB_WEBHOOK_TIMEOUT_SECONDS ({self.WEBHOOK_TIMEOUT_SECONDS:g}): a "
                "dispatcher must record an attempt before its lease on the webhook ends")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
