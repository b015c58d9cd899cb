"""Blobs: the content-addressed files that models and adapters point at, and their GC."""
