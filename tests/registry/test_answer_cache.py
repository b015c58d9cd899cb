"""The answer cache of change-tagged listings stays within its bytes, oldest out."""

from __future__ import annotations

from registry.infra.conditional import AnswerCache


def test_it_keeps_the_newest_within_its_bytes() -> None:
    cache = AnswerCache(max_bytes=80)
    for index in range(10):
        cache.put(f'"t{index}"', bytes(10))
    kept = [index for index in range(10) if cache.get(f'"t{index}"') is not None]
    assert kept == [2, 3, 4, 5, 6, 7, 8, 9]


def test_a_use_keeps_an_answer_longer() -> None:
    cache = AnswerCache(max_bytes=80)
    for name in "abcdefgh":  # full
        cache.put(name, bytes(10))
    assert cache.get("a") is not None  # now the newest used
    cache.put("i", bytes(10))
    assert cache.get("b") is None
    assert cache.get("a") is not None


def test_a_body_over_an_eighth_of_it_is_not_kept() -> None:
    cache = AnswerCache(max_bytes=80)
    cache.put("small", bytes(10))
    cache.put("big", bytes(11))
    assert cache.get("big") is None
    assert cache.get("small") is not None
    assert AnswerCache(0).get("x") is None
