"""Blobs: the rows of the content-addressed files that models, adapters and data sets point at."""
