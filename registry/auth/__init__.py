"""API tokens: hashed at rest, scoped (read, push, compress, admin)."""
