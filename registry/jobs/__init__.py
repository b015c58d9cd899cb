"""Compression jobs: the queue in SQL, the API, and the workers that run codecs."""
