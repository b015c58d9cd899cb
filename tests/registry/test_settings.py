"""Settings refuse inconsistent values at start-up, naming the variable to change."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from registry.settings import Settings


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(("values", "names"), [
    ({"DEFAULT_PAGE_SIZE": 500}, ["DELTAHUB_DEFAULT_PAGE_SIZE", "DELTAHUB_MAX_PAGE_SIZE"]),
    ({"STORAGE_URL": "ftp://host/x"}, ["DELTAHUB_STORAGE_URL", "s3://bucket/prefix"]),
    ({"STORAGE_URL": "s3://Not_A_Bucket"}, ["DELTAHUB_STORAGE_URL", "bucket name"]),
    ({"STORAGE_URL": "s3://key:secret@bucket"}, ["DELTAHUB_S3_*"]),
    ({"STORAGE_URL": "file://data/blobs"}, ["DELTAHUB_STORAGE_URL", "file:./rel/dir"]),
    ({"S3_ACCESS_KEY_ID": "AKIA"}, ["DELTAHUB_S3_SECRET_ACCESS_KEY"]),
    ({"S3_SECRET_ACCESS_KEY": "s"}, ["DELTAHUB_S3_ACCESS_KEY_ID"]),
    ({"S3_ENDPOINT_URL": "127.0.0.1:9000"}, ["DELTAHUB_S3_ENDPOINT_URL", "http://"]),
    ({"DB_READERS": 0}, ["DB_READERS"]),
])
def test_inconsistent_settings_name_the_variable(values: dict[str, Any],
                                                 names: list[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(**values)
    for name in names:
        assert name in str(caught.value)


def test_consistent_settings_are_accepted() -> None:
    settings = _settings(STORAGE_URL="s3://models/deltahub", S3_ACCESS_KEY_ID="a",
                         S3_SECRET_ACCESS_KEY="b", S3_ENDPOINT_URL="http://127.0.0.1:9000",
                         DEFAULT_PAGE_SIZE=100, MAX_PAGE_SIZE=100)
    assert settings.STORAGE_URL == "s3://models/deltahub"
