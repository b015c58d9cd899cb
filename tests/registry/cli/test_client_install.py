"""`pip install deltahub` alone: the client, without torch or the server, in a fresh venv,
pushing, listing and pulling a real peft adapter against a live server."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.registry.conftest import TinyModels
from tests.registry.serverproc import issue_admin_token, serve

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ("pyproject.toml", "README.md", "registry", "compress", "kernels")
INSTALL_TIMEOUT_SECONDS = 600


def _client_wheel(workdir: Path) -> Path:
    """The project's wheel, built by this interpreter from a copy of the sources (the
    checkout stays free of build/ and egg-info)."""
    src = workdir / "src"
    src.mkdir()
    for name in PACKAGE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, src / name)
    wheels = workdir / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(wheels), str(src)],
                   check=True, timeout=INSTALL_TIMEOUT_SECONDS)
    (wheel,) = wheels.glob("deltahub-*.whl")
    return wheel


def _client_venv(workdir: Path) -> Path:
    venv = workdir / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=120)
    # The dependencies come from the package index, as for a user: the client's own only.
    # Without PYTHONPATH: a checkout on it (as in a developer's shell) would make pip see
    # this project as installed already, and skip it.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet",
                    "--disable-pip-version-check", str(_client_wheel(workdir))],
                   check=True, timeout=INSTALL_TIMEOUT_SECONDS, env=clean)
    return venv


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_client_alone_pushes_lists_and_pulls_a_peft_adapter(
        database_url: str, tiny_models: TinyModels, tmp_path: Path) -> None:
    venv = _client_venv(tmp_path)
    python, deltahub = venv / "bin" / "python", venv / "bin" / "deltahub"
    for heavy in ("torch", "fastapi", "sqlalchemy", "numpy", "safetensors"):
        probe = subprocess.run([str(python), "-c", f"import {heavy}"], capture_output=True,
                               timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert probe.returncode != 0, f"{heavy} is installed with the client alone"

    workdir = tmp_path / "ci-job"  # not the checkout: nothing of it is importable here
    workdir.mkdir()
    token = issue_admin_token(database_url)
    with serve(database_url, tmp_path / "server") as server:
        env = {"PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path),
               "DELTAHUB_URL": server.url, "DELTAHUB_TOKEN": token, "COLUMNS": "200"}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(deltahub), *args], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=120)

        model = run("push-model", str(tiny_models.base), "--name", "tiny-base")
        assert model.returncode == 0, model.stderr
        pushed = run("push", str(tiny_models.lora), "--base", "tiny-base",
                     "--name", "support-bot", "--alias", "prod")
        assert pushed.returncode == 0, pushed.stderr
        assert "support-bot@1 (new version)" in pushed.stdout
        listed = run("ls", "adapters", "--base", "tiny-base", "--json")
        assert listed.returncode == 0, listed.stderr
        (adapter,) = json.loads(listed.stdout)
        assert (adapter["name"], adapter["kind"], adapter["aliases"]) == (
            "support-bot", "lora", ["latest", "prod"])
        pulled = run("pull", "support-bot:prod", "-o", "out")
        assert pulled.returncode == 0, pulled.stderr
        names = sorted(p.name for p in tiny_models.lora.iterdir())
        assert sorted(p.name for p in (workdir / "out").iterdir()) == names
        assert filecmp.cmpfiles(workdir / "out", tiny_models.lora, names,
                                shallow=False)[0] == names

        for command, extra in ((["serve"], "server"),
                               (["bitdelta", "a", "b", "-o", "c"], "compress")):
            missing = run(*command)
            assert missing.returncode == 7, missing.stderr
            assert f"pip install 'deltahub[{extra}]'" in missing.stderr
    assert not (workdir / "deltahub-data").exists()
