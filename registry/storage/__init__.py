"""Object storage for blobs: one interface (base.py), a local directory and S3 backends."""
