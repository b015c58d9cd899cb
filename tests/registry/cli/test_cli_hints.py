"""Refusals in a CLI user's words: flags rather than API fields, commands rather than
routes, each hint once, and the versions or aliases of a name when a reference misses."""

from __future__ import annotations

import pytest

from registry.cli.failures import EXIT_AUTH, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE
from tests.conftest import Tokens
from tests.registry.cli.conftest import Cli
from tests.registry.conftest import TinyModels


def flat(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture
def registered(cli: Cli, tiny_models: TinyModels) -> Cli:
    """tiny-base, its fine-tune tiny-ft, and the adapter `bot` in two versions, the first
    aliased `prod`."""
    for args in (["push-model", str(tiny_models.base), "--name", "tiny-base"],
                 ["push-model", str(tiny_models.finetune), "--name", "tiny-ft",
                  "--base", "tiny-base"],
                 ["push", str(tiny_models.lora), "--base", "tiny-base", "--name", "bot",
                  "--alias", "prod"]):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    second = tiny_models.lora.parent / "lora-hints-v2"
    second.mkdir(exist_ok=True)
    for path in tiny_models.lora.iterdir():
        (second / path.name).write_bytes(path.read_bytes())
    (second / "README.md").write_text("version two\n")
    assert cli("push", str(second), "--base", "tiny-base", "--name", "bot").exit_code == 0
    return cli


@pytest.mark.parametrize("size", [[], ["--rank", "4", "--target-error", "0.2"]])
def test_lora_without_its_size_names_the_flags(cli: Cli, size: list[str]) -> None:
    result = cli("compress", "tiny-ft", "--method", "lora", *size)
    assert result.exit_code == EXIT_USAGE, result.output
    said = flat(result.output)
    assert "--method lora takes --rank N" in said
    assert "--target-error E" in said
    assert "target_error" not in said


def test_a_refused_compress_names_flags_not_fields(registered: Cli) -> None:
    result = registered("compress", "tiny-ft", "--method", "lora", "--rank", "4",
                        "--max-rank", "8")
    assert result.exit_code == EXIT_FAILED, result.output
    said = flat(result.output)
    assert "--max-rank caps a --target-error search" in said
    assert "max_rank" not in said


def test_hints_name_commands_not_routes(registered: Cli) -> None:
    result = registered("show", "no-such-adapter")
    assert result.exit_code == EXIT_NOT_FOUND, result.output
    said = flat(result.output)
    assert "list them with `deltahub ls adapters`" in said
    assert "GET /adapters" not in said
    model = registered("show", "--model", "tiny-bsae")
    assert "`deltahub ls models`" in flat(model.output)
    assert "did you mean 'tiny-base'" in flat(model.output)


def test_a_misspelt_alias_gets_a_did_you_mean(registered: Cli) -> None:
    result = registered("show", "bot:prdo")
    assert result.exit_code == EXIT_NOT_FOUND, result.output
    said = flat(result.output)
    assert "did you mean 'bot:prod'?" in said
    assert "bot's aliases: latest, prod" in said


def test_a_missing_version_lists_the_versions(registered: Cli) -> None:
    result = registered("pull", "bot@7", "-o", "out")
    assert result.exit_code == EXIT_NOT_FOUND, result.output
    assert "bot has versions 2, 1" in flat(result.output)


def test_the_scope_hint_is_said_once(registered: Cli, tokens: Tokens,
                                     tiny_models: TinyModels) -> None:
    result = registered.as_token(tokens.read)("push-model", str(tiny_models.base),
                                              "--name", "other")
    assert result.exit_code == EXIT_AUTH, result.output
    said = flat(result.output)
    assert said.count("use a token with that scope") == 1, said
    assert "deltahub token create --scopes" in said
