"""`deltahub ls`, `show`, `alias` and `rm` against a real server."""

from __future__ import annotations

import json

import pytest

from registry.cli.app import app
from registry.cli.failures import EXIT_AUTH, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE
from tests.conftest import LiveServer, Tokens
from tests.registry.cli.conftest import Cli, env_for, runner
from tests.registry.conftest import TinyModels

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def registered(cli: Cli, tiny_models: TinyModels) -> Cli:
    """A base and two versions of the adapter `bot`, the first also aliased `prod`."""
    for args in (["push-model", str(tiny_models.base), "--name", "tiny-llama"],
                 ["push", str(tiny_models.lora), "--base", "tiny-llama", "--name", "bot",
                  "--alias", "prod"]):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    second = tiny_models.lora.parent / "lora-v2"
    if not second.exists():
        second.mkdir()
        for p in tiny_models.lora.iterdir():
            (second / p.name).write_bytes(p.read_bytes())
        (second / "README.md").write_text("version two\n")
    result = cli("push", str(second), "--base", "tiny-llama", "--name", "bot")
    assert "bot@2 (new version)" in result.output, result.output
    return cli


def test_ls_prints_tables_or_json(registered: Cli) -> None:
    models = registered("ls", "models")
    assert models.exit_code == 0, models.output
    assert "tiny-llama" in models.stdout
    assert "ready" in models.stdout
    as_json = json.loads(registered("ls", "models", "--json").stdout)
    assert [m["name"] for m in as_json] == ["tiny-llama"]
    assert as_json[0]["kind"] == "base"

    adapters = json.loads(registered("ls", "adapters", "--json").stdout)
    assert [(a["name"], a["version"]) for a in adapters] == [("bot", 2), ("bot", 1)]
    assert adapters[0]["aliases"] == ["latest"]
    assert adapters[1]["aliases"] == ["prod"]
    prod = json.loads(registered("ls", "adapters", "--alias", "prod", "--json").stdout)
    assert [a["version"] for a in prod] == [1]
    refused = registered("ls", "models", "--alias", "prod")
    assert refused.exit_code == EXIT_USAGE
    bad = registered("ls", "things")
    assert bad.exit_code == EXIT_USAGE  # click names the choices


def test_long_names_stay_whole_on_a_narrow_terminal(cli: Cli, tiny_models: TinyModels) -> None:
    name = "customer-support-bot-for-the-northern-region-with-a-very-long-name"
    cli("push-model", str(tiny_models.base), "--name", "tiny-llama")
    pushed = cli("push", str(tiny_models.lora), "--base", "tiny-llama", "--name", name)
    assert pushed.exit_code == 0, pushed.output
    narrow = cli("ls", "adapters", env={"COLUMNS": "72"})
    lines = narrow.stdout.splitlines()
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == 1  # one line per adapter: other columns gave way
    assert f"│ {name} │" in rows[0]
    assert "…" not in narrow.stdout
    assert all(len(line) <= 72 for line in lines)
    wide = json.loads(cli("ls", "adapters", "--json", env={"COLUMNS": "72"}).stdout)
    assert wide[0]["name"] == name  # scripts get every field


def test_show_an_adapter_and_a_model(registered: Cli) -> None:
    shown = registered("show", "bot")
    assert shown.exit_code == 0, shown.output
    assert "bot@2" in shown.stdout
    assert "README.md" in shown.stdout
    assert "tiny-llama" in shown.stdout
    first = json.loads(registered("show", "bot:prod", "--json").stdout)
    assert (first["version"], first["aliases"]) == (1, ["prod"])
    assert json.loads(registered("show", "bot@1", "--json").stdout)["id"] == first["id"]
    model = json.loads(registered("show", "tiny-llama", "--model", "--json").stdout)
    assert model["tensor_count"] == 21
    assert "parameters" in registered("show", "tiny-llama", "--model").stdout


def test_name_is_name_latest_and_a_rollback_moves_both(registered: Cli,
                                                      tiny_models: TinyModels) -> None:
    def version(ref: str) -> int:
        result = registered("show", ref, "--json")
        assert result.exit_code == 0, result.output
        return int(json.loads(result.stdout)["version"])

    assert version("bot") == version("bot:latest") == 2
    rolled = registered("alias", "set", "bot@1", "latest")  # a rollback
    assert rolled.exit_code == 0, rolled.output
    assert version("bot") == version("bot:latest") == 1
    kept = registered("alias", "rm", "bot", "latest")
    assert kept.exit_code == EXIT_FAILED, kept.output
    assert "AliasReserved" in kept.stderr
    third = tiny_models.lora.parent / "lora-v3"
    if not third.exists():
        third.mkdir()
        for f in tiny_models.lora.iterdir():
            (third / f.name).write_bytes(f.read_bytes())
        (third / "README.md").write_text("version three\n")
    assert registered("push", str(third), "--base", "tiny-llama", "--name", "bot").exit_code == 0
    assert version("bot") == version("bot:latest") == 3  # a new version moves it on


def test_alias_set_moves_an_alias(registered: Cli) -> None:
    moved = registered("alias", "set", "bot@2", "prod")
    assert moved.exit_code == 0, moved.output
    assert "bot:prod -> bot@2" in moved.stdout
    assert json.loads(registered("show", "bot:prod", "--json").stdout)["version"] == 2
    assert json.loads(registered("show", "bot@1", "--json").stdout)["aliases"] == []


def test_alias_rm_removes_an_alias(registered: Cli) -> None:
    removed = registered("alias", "rm", "bot", "prod")
    assert removed.exit_code == 0, removed.output
    assert "removed bot:prod" in removed.stdout
    assert registered("show", "bot:prod").exit_code == EXIT_NOT_FOUND
    assert json.loads(registered("show", "bot@1", "--json").stdout)["aliases"] == []
    again = registered("alias", "rm", "bot", "prod")
    assert again.exit_code == EXIT_NOT_FOUND
    assert "AliasNotFound" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_rm_deletes_a_version_and_latest_moves_back(registered: Cli, tokens: Tokens) -> None:
    as_push = registered.as_token(tokens.push)
    refused = as_push("rm", "bot")
    assert refused.exit_code == EXIT_AUTH, refused.output
    deleted = registered("rm", "bot")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted bot@2" in deleted.stdout
    assert json.loads(registered("show", "bot:latest", "--json").stdout)["version"] == 1
    gone = registered("show", "bot@2")
    assert gone.exit_code == EXIT_NOT_FOUND
    assert "AdapterNotFound" in gone.output


def test_rm_a_model(registered: Cli, tiny_models: TinyModels) -> None:
    spare = registered("push-model", str(tiny_models.other_base), "--name", "spare")
    assert spare.exit_code == 0, spare.output
    deleted = registered("rm", "spare", "--model")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted model spare" in deleted.stdout
    assert registered("show", "spare", "--model").exit_code == EXIT_NOT_FOUND
    assert [m["name"] for m in json.loads(registered("ls", "models", "--json").stdout)] == [
        "tiny-llama"]


def test_unknown_names_are_404_with_a_suggestion(registered: Cli) -> None:
    typo = registered("ls", "adapters", "--base", "tiny-lama")
    assert typo.exit_code == EXIT_NOT_FOUND, typo.output
    assert "tiny-llama" in typo.stderr  # did you mean
    assert "http" in typo.stderr  # the URL that failed
    assert len(typo.stderr.strip().splitlines()) == 1
    missing = registered("show", "bto")
    assert missing.exit_code == EXIT_NOT_FOUND
    assert "'bot'" in missing.stderr


def test_no_token_is_a_usage_error(live_server: LiveServer) -> None:
    result = runner.invoke(app, ["ls", "adapters"], env=env_for(live_server.url, None))
    assert result.exit_code == EXIT_USAGE
    assert "DELTAHUB_TOKEN" in result.output


def test_gain_kept_sorts_ls_and_show_prints_the_evaluation(cli: Cli,
                                                           tiny_models: TinyModels) -> None:
    """An evaluation stated in a pushed report.json (as `deltahub evaluate --json` writes
    it) becomes the version's quality: `ls --sort gain_kept` ranks by it, `show` tables it."""
    cli("push-model", str(tiny_models.base), "--name", "tiny-llama")
    score = {"loss": 2.0, "perplexity": 7.389}
    for name, gain in (("low", 0.5), ("high", 0.93)):
        directory = tiny_models.lora.parent / f"lora-{name}"
        if not directory.exists():
            directory.mkdir()
            for p in tiny_models.lora.iterdir():
                (directory / p.name).write_bytes(p.read_bytes())
        evaluation = {"compressed_kind": "lora", "gain_kept": gain, "datasets": [
            {"name": "heldout.txt", "base": {"loss": 2.5, "perplexity": 12.18},
             "finetune": {"loss": 1.9, "perplexity": 6.686}, "compressed": score,
             "gain_kept": gain}]}
        (directory / "report.json").write_text(json.dumps(
            {"gain_kept": gain, "evaluation": evaluation}))
        pushed = cli("push", str(directory), "--base", "tiny-llama", "--name", name)
        assert pushed.exit_code == 0, pushed.output
    ranked = json.loads(cli("ls", "adapters", "--sort", "gain_kept", "--json").stdout)
    assert [a["name"] for a in ranked] == ["high", "low"]
    table = cli("ls", "adapters", "--sort", "gain_kept", env={"COLUMNS": "200"}).stdout
    assert table.index("0.930") < table.index("0.500")
    shown = cli("show", "high", env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "evaluation" in shown.stdout
    row = next(line for line in shown.stdout.splitlines()
               if "heldout.txt" in line and "lora" in line)
    assert "7.389" in row
    assert "0.93" in row
    refused = cli("ls", "models", "--sort", "gain_kept")
    assert refused.exit_code == EXIT_USAGE
