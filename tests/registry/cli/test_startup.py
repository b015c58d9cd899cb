"""The CLI starts light: `--help` and the client commands import no server, codec or torch,
and a command whose extra is missing says which one to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli.app import COMMANDS, app
from registry.cli.failures import EXIT_NOT_INSTALLED
from tests.s3server import free_port

ROOT = Path(__file__).resolve().parents[3]
# Typer itself needs pydantic (>= 0.29), so that one is part of the client.
HEAVY = ("torch", "numpy", "safetensors", "triton", "matplotlib", "fastapi", "starlette",
         "uvicorn", "sqlalchemy", "alembic", "psycopg", "boto3",
         "pydantic_settings", "re2", "kernels", "compress.tensorio", "compress.bitdelta",
         "compress.lora", "registry.app", "registry.settings", "registry.infra.engines")

# Runs the console script's entry point and reports, at exit, every module it imported.
# `blocked` packages are made to look uninstalled, as in `pip install deltahub` alone.
PROBE = """
import atexit, sys
blocked = set(sys.argv[1].split(",")) - {""}
class Uninstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Uninstalled())
atexit.register(lambda: sys.__stderr__.write("\\nMODULES " + " ".join(sorted(sys.modules))))
sys.argv = ["deltahub", *sys.argv[2:]]
from registry.cli.app import main
main()
"""


def probe(*args: str, blocked: tuple[str, ...] = ()) -> tuple[int, str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(blocked), *args], cwd=ROOT,
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "DELTAHUB_TOKEN": "dh_x", "COLUMNS": "200"})
    err, _, modules = done.stderr.rpartition("\nMODULES ")
    return done.returncode, done.stdout + err, set(modules.split())


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("args", [
    ["--help"],
    ["push", "--help"],
    ["ls", "models", "--url", "http://127.0.0.1:{port}"],
    ["show", "bot", "--url", "http://127.0.0.1:{port}"],
], ids=" ".join)
def test_help_and_client_commands_import_nothing_heavy(args: list[str]) -> None:
    port = str(free_port())
    code, output, modules = probe(*(a.replace("{port}", port) for a in args))
    assert code in (0, 6), output  # 6: nothing listens on that port
    assert heavy_in(modules) == []
    if args[0] == "ls":
        assert "cannot reach the server" in output
        assert "httpx" in modules  # it did try


def test_a_codec_command_imports_its_codec_only_when_it_runs() -> None:
    code, output, modules = probe("bitdelta", "--help")
    assert code == 0, output
    assert "torch" in modules
    assert "fastapi" not in modules


@pytest.mark.parametrize(("args", "extra"), [
    (["serve"], "server"),
    (["token", "list"], "server"),
    (["gc"], "server"),
    (["bitdelta", "a", "b", "-o", "c"], "compress"),
    (["verify", "--help"], "compress"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_a_missing_extra_is_named_in_one_line(args: list[str], extra: str) -> None:
    code, output, _ = probe(*args, blocked=("torch", "fastapi", "uvicorn", "sqlalchemy",
                                            "pydantic_settings", "numpy"))
    assert code == EXIT_NOT_INSTALLED, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert f"pip install 'deltahub[{extra}]'" in lines[0]
    assert f"from a checkout: pip install -e '.[{extra}]'" in lines[0]
    assert f"pip install './deltahub[{extra}]'" in lines[0]
    assert f"deltahub {args[0]} is not installed" in lines[0]


def test_client_commands_work_without_the_extras() -> None:
    code, output, _ = probe(
        "ls", "adapters", "--url", f"http://127.0.0.1:{free_port()}",
        blocked=("torch", "fastapi", "uvicorn", "sqlalchemy", "pydantic_settings", "numpy"))
    assert code == 6, output
    assert "cannot reach the server" in output


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_listing_says_what_each_command_says_of_itself(name: str) -> None:
    # The listing comes from the table without importing; it must not drift from the
    # command's own help (its docstring's first line).
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert " ".join(COMMANDS[name].summary.split()) in " ".join(result.stdout.split())


def test_unknown_commands_get_a_suggestion() -> None:
    result = CliRunner().invoke(app, ["pul"])
    assert result.exit_code == 2
    assert "Did you mean 'pull'" in result.output
