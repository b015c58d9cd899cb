"""`deltahub push-dataset` and `datasets` against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.cli.failures import EXIT_AUTH, EXIT_FAILED, EXIT_USAGE
from tests.conftest import Tokens
from tests.registry.cli.conftest import Cli
from tests.registry.datasets.helpers import KINDS

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    paths = []
    for name, data in sorted(KINDS.items()):
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    return paths


def test_push_dataset_then_list(cli: Cli, files: list[str]) -> None:
    pushed = cli("push-dataset", *files, "--name", "calib", "--description", "wiki sample")
    assert pushed.exit_code == 0, pushed.output
    size = sum(len(d) for d in KINDS.values())
    assert f"calib: 3 file(s), {size:,} bytes, ready (new)" in pushed.output
    assert "deltahub attach-tokenizer MODEL DIR" in " ".join(pushed.output.split())
    again = cli("push-dataset", *files, "--name", "calib")
    assert again.exit_code == 0, again.output
    assert "unchanged: the same files were registered already" in again.output

    listed = cli("datasets")
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.output.splitlines() if "calib" in line]
    assert "ready" in row
    assert "wiki sample" in row
    as_json = cli("datasets", "--json")
    [item] = json.loads(as_json.stdout)
    assert (item["name"], item["status"], len(item["files"])) == ("calib", "ready", 3)


def test_refusals_end_with_their_exit_status(cli: Cli, tokens: Tokens, files: list[str],
                                             tmp_path: Path) -> None:
    bad = tmp_path / "bad" / "ids.safetensors"
    bad.parent.mkdir()
    bad.write_bytes(b"\x80\x04 a pickle")
    refused = cli("push-dataset", str(bad), "--name", "bad")
    assert refused.exit_code == EXIT_FAILED, refused.output
    assert "PickleRefused" in refused.output
    read_only = cli.as_token(tokens.read)("push-dataset", *files, "--name", "calib")
    assert read_only.exit_code == EXIT_AUTH, read_only.output
    no_token = cli("push-dataset", *files, "--name", "calib", env={"DELTAHUB_TOKEN": ""})
    assert no_token.exit_code == EXIT_USAGE
    twice = cli("push-dataset", files[0], str(bad.parent.parent / Path(files[0]).name),
                "--name", "calib")
    assert twice.exit_code == EXIT_USAGE, twice.output
    assert "same file name" in twice.output
    # The same files, token and name are taken: each refusal above was its own.
    assert cli("push-dataset", *files, "--name", "calib").exit_code == 0
