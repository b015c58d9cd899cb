"""db/token/gc/serve run the server's code in the CLI's process: its refusals and bad
settings end in one line and an exit status, not a traceback."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from registry.cli.failures import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, describe
from registry.errors import InvalidRequest, TokenNotFound
from registry.settings import Settings


def test_the_servers_refusals_keep_their_name_and_status() -> None:
    assert describe(TokenNotFound("no token with id 999")) == (
        "TokenNotFound", "no token with id 999", EXIT_NOT_FOUND)
    assert describe(InvalidRequest("unknown scope 'bogus'")) == (
        "InvalidRequest", "unknown scope 'bogus'", EXIT_FAILED)


def test_a_bad_setting_names_its_variable() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, PORT=99999, WORKERS="abc")  # type: ignore[call-arg, arg-type]
    found = describe(raised.value)
    assert found is not None
    what, detail, code = found
    assert (what, code) == ("InvalidSettings", EXIT_USAGE)
    assert "DELTAHUB_PORT" in detail
    assert "DELTAHUB_WORKERS" in detail
