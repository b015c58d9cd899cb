"""The codec layer's data set errors, and the limit, as the registry sees them."""

from __future__ import annotations

import pytest

import compress.quality
from compress import errors
from compress.quality import DEFAULT_MAX_DATA_BYTES
from compress.quality import errors as quality_errors
from registry.errors import PayloadTooLarge, Unprocessable, UnsupportedFile, from_codec_error
from registry.settings import Settings


@pytest.mark.parametrize("error", [errors.InvalidDataset, errors.MissingTokenizer])
def test_data_set_errors_are_422_under_their_own_name(error: type[errors.CodecError]) -> None:
    mapped = from_codec_error(error("d.jsonl line 2: no 'text'"))
    assert isinstance(mapped, Unprocessable)
    assert (mapped.status_code, mapped.name) == (422, error.__name__)
    assert mapped.detail == "d.jsonl line 2: no 'text'"


def test_other_codec_errors_keep_their_statuses() -> None:
    assert isinstance(from_codec_error(errors.PickleRefused("x")), UnsupportedFile)
    assert isinstance(from_codec_error(errors.TooLarge("x")), PayloadTooLarge)


def test_the_errors_moved_but_old_imports_still_work() -> None:
    for name in ("InvalidDataset", "MissingTokenizer", "NonFiniteLoss", "MissingDependency"):
        moved = getattr(errors, name)
        assert getattr(quality_errors, name) is moved
        assert getattr(compress.quality, name) is moved
        assert issubclass(moved, errors.CodecError)


def test_the_registry_stores_what_an_evaluation_reads() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.MAX_DATASET_BYTES == DEFAULT_MAX_DATA_BYTES
