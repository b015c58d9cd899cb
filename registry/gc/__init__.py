"""Garbage collection: blobs nothing references, and drafts no push touches."""
