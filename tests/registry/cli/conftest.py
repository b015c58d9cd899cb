"""The CLI as a user runs it: the real typer app, against a real server on loopback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner, Result

from registry.cli.app import app
from tests.conftest import LiveServer, Tokens

runner = CliRunner()
WIDE = "200"  # the runner is no terminal: rich would assume 80 columns and cut names


def env_for(server_url: str, headers: Mapping[str, str] | None,
            columns: str = WIDE) -> dict[str, str]:
    token = headers["Authorization"].removeprefix("Bearer ") if headers else ""
    return {"DELTAHUB_URL": server_url, "DELTAHUB_TOKEN": token, "COLUMNS": columns}


@dataclass(frozen=True)
class Cli:
    """`deltahub ...` with a server and a token in the environment."""

    server: LiveServer
    env: dict[str, str]

    def __call__(self, *args: str, env: Mapping[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env={**self.env, **(env or {})})

    def as_token(self, headers: Mapping[str, str]) -> Cli:
        return Cli(self.server, env_for(self.server.url, headers))


@pytest.fixture
def cli(live_server: LiveServer, tokens: Tokens) -> Cli:
    return Cli(live_server, env_for(live_server.url, tokens.admin))
