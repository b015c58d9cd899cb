"""Streamed file uploads: name rules, one-pass hashing + validation + staging, recording."""
