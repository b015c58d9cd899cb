"""Token secrets: how they are made and how they are stored (only as a sha256)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from enum import StrEnum

TOKEN_PREFIX = "dh_"  # noqa: S105  (a public marker, not a secret)


class Scope(StrEnum):
    READ = "read"
    PUSH = "push"
    COMPRESS = "compress"
    ADMIN = "admin"  # implies every other scope


def new_secret() -> str:
    # 256 bits of randomness: a plain sha256 of it is a safe verifier (no brute force
    # to slow down, unlike a human password), and lookup by hash is a unique index.
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[: len(TOKEN_PREFIX) + 6]


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    scopes: set[Scope] = set()
    for value in values:
        value = value.strip()
        if not value:
            continue
        try:
            scopes.add(Scope(value))
        except ValueError:
            allowed = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {value!r}; choose from {allowed}") from None
    if not scopes:
        raise ValueError("a token needs at least one scope (read, push, compress, admin)")
    return sorted(scopes)


def grants(held: Iterable[str], needed: Scope) -> bool:
    held_set = set(held)
    return Scope.ADMIN.value in held_set or needed.value in held_set
