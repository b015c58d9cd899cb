"""Fixtures of the engine tests: the models (built once per session), one torch thread,
and a registry on SQLite."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.registry.serving.engine.helpers import EngineModels, make_models


@pytest.fixture(scope="session")
def engine_models(tmp_path_factory: pytest.TempPathFactory) -> EngineModels:
    return make_models(tmp_path_factory.mktemp("engine-models"))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices: on a shared machine a second thread only adds contention (5x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """SQLite only: the engine talks to the registry over HTTP, whatever its database."""
    path = tmp_path / "deltahub.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


