"""Shared infrastructure of the registry: SQL engines and turns, HTTP middleware,
error rendering, OpenAPI, metrics, health, pagination, scratch space."""
