"""`deltahub push`, `push-model` and `pull` against a real server, as a CI job uses them."""

from __future__ import annotations

import filecmp
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from registry.cli.failures import EXIT_UNAVAILABLE
from registry.client import DeltahubClient, ServerUnreachable
from registry.tables import Adapter, Model, Status
from tests.compress.bitdelta.helpers import make_delta
from tests.registry.cli.conftest import Cli
from tests.registry.conftest import TinyModels

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def push_base(cli: Cli, tiny_models: TinyModels, name: str = "llama-tiny") -> None:
    result = cli("push-model", str(tiny_models.base), "--name", name)
    assert result.exit_code == 0, result.output
    assert "21 tensors" in result.output


def test_push_ls_pull(cli: Cli, tiny_models: TinyModels, tmp_path: Path) -> None:
    push_base(cli, tiny_models)
    lora = tmp_path / "lora"
    shutil.copytree(tiny_models.lora, lora)
    (lora / "training_args.bin").write_bytes(b"\x80\x04 not ours")  # what a Trainer leaves
    push = ["push", str(lora), "--base", "llama-tiny", "--name", "support-bot",
            "--alias", "prod"]
    result = cli(*push)
    assert result.exit_code == 0, result.output
    assert "support-bot@1 (new version)" in result.output
    assert "skipping training_args.bin" in result.output
    again = cli(*push)
    assert "support-bot@1 (unchanged" in again.output

    listed = cli("ls", "adapters", "--base", "llama-tiny")
    assert listed.exit_code == 0
    assert "support-bot" in listed.output
    assert "latest, prod" in listed.output

    out = tmp_path / "pulled"
    pulled = cli("pull", "support-bot:prod", "-o", str(out))
    assert pulled.exit_code == 0, pulled.output
    names = sorted(p.name for p in tiny_models.lora.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    same, mismatch, errors = filecmp.cmpfiles(out, tiny_models.lora, names, shallow=False)
    assert (same, mismatch, errors) == (names, [], [])
    # A second pull finds every file there already, checked by its sha256.
    (out / "adapter_config.json").write_text("{}")  # ... except one that changed
    repeat = cli("pull", "support-bot", "-o", str(out))
    assert repeat.exit_code == 0, repeat.output
    assert f"({len(names)} files, {len(names) - 1} already there)" in repeat.output
    assert filecmp.cmp(out / "adapter_config.json", tiny_models.lora / "adapter_config.json",
                       shallow=False)

    model_out = tmp_path / "model"
    pulled = cli("pull", "llama-tiny", "--model", "-o", str(model_out))
    assert pulled.exit_code == 0, pulled.output
    names = sorted(p.name for p in tiny_models.base.iterdir())
    assert sorted(p.name for p in model_out.iterdir()) == names
    assert filecmp.cmpfiles(model_out, tiny_models.base, names, shallow=False)[0] == names


def test_push_keeps_the_report_and_pictures_and_records_the_source(
        cli: Cli, tiny_models: TinyModels, tmp_path: Path) -> None:
    push_base(cli, tiny_models, "tiny-base")
    ft = cli("push-model", str(tiny_models.finetune), "--name", "tiny-ft", "--base",
             "tiny-base")
    assert ft.exit_code == 0, ft.output
    lora = tmp_path / "extracted"
    shutil.copytree(tiny_models.lora, lora)
    (lora / "report.json").write_text(json.dumps({"max_rel_error": 0.25, "modules": 3}))
    (lora / "spectra.png").write_bytes(_png())
    result = cli("push", str(lora), "--base", "tiny-base", "--name", "extracted",
                 "--source", "tiny-ft")
    assert result.exit_code == 0, result.output
    assert "skipping" not in result.output
    shown = json.loads(cli("show", "extracted", "--json").stdout)
    assert shown["source_model"] == "tiny-ft"
    assert {"report.json", "spectra.png"} <= {f["filename"] for f in shown["files"]}
    assert shown["quality"]["max_rel_error"] == 0.25
    wrong = cli("push", str(lora), "--base", "tiny-base", "--name", "other",
                "--source", "tiny-base")
    assert wrong.exit_code == 1
    assert "InvalidSource" in wrong.output

    delta = make_delta(tiny_models.base, tiny_models.finetune, tmp_path / "delta")
    (delta / "spectra.png").write_bytes(_png())
    (delta / "notes.txt").write_text("not part of a delta\n")
    pushed = cli("push", str(delta), "--base", "tiny-base", "--name", "ft-bitdelta",
                 "--source", "tiny-ft")
    assert pushed.exit_code == 0, pushed.output
    assert "skipping notes.txt" in pushed.output
    shown = json.loads(cli("show", "ft-bitdelta", "--json").stdout)
    assert shown["kind"] == "bitdelta"  # detected from delta.safetensors
    assert sorted(f["filename"] for f in shown["files"]) == sorted(
        p.name for p in delta.iterdir() if p.name != "notes.txt")
    assert "report.json" in {f["filename"] for f in shown["files"]}


def _png() -> bytes:
    """A valid 1x1 PNG: signature, IHDR, IDAT, IEND, with their CRCs."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def test_a_failed_push_model_resumes_from_the_files_already_uploaded(
        cli: Cli, tiny_models: TinyModels, engine: Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    real_upload = DeltahubClient.upload

    def upload_then_drop(self: DeltahubClient, owner: str, path: Path, sha256: str,
                         advance: object = None) -> dict[str, object]:
        if len(sent) == 2:
            raise ServerUnreachable("PUT", f"{owner}/files/{path.name}", "cannot connect")
        sent.append(path.name)
        return real_upload(self, owner, path, sha256)

    monkeypatch.setattr(DeltahubClient, "upload", upload_then_drop)
    failed = cli("push-model", str(tiny_models.base), "--name", "llama-tiny")
    assert failed.exit_code == EXIT_UNAVAILABLE, failed.output
    first_run = list(sent)
    monkeypatch.setattr(DeltahubClient, "upload", real_upload)

    calls: list[str] = []
    monkeypatch.setattr(DeltahubClient, "upload",
                        lambda self, owner, path, sha256, advance=None: (
                            calls.append(path.name), real_upload(self, owner, path, sha256))[1])
    resumed = cli("push-model", str(tiny_models.base), "--name", "llama-tiny")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: 2 of" in resumed.output
    assert not set(calls) & set(first_run)  # nothing sent twice
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Model)) == 1
        assert conn.scalar(select(Model.status)) == Status.READY


def test_a_rerun_after_the_directory_changed_pushes_exactly_its_files(
        cli: Cli, tiny_models: TinyModels, tmp_path: Path, engine: Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    push_base(cli, tiny_models)
    lora = tmp_path / "lora"
    shutil.copytree(tiny_models.lora, lora)
    (lora / "README.md").write_text("a first card\n")
    real_upload = DeltahubClient.upload

    def drop_after_the_card(self: DeltahubClient, owner: str, path: Path, sha256: str,
                            advance: object = None) -> dict[str, object]:
        if path.name != "README.md":
            raise ServerUnreachable("PUT", f"{owner}/files/{path.name}", "cannot connect")
        return real_upload(self, owner, path, sha256)

    monkeypatch.setattr(DeltahubClient, "upload", drop_after_the_card)
    assert cli("push", str(lora), "--base", "llama-tiny", "--name", "bot").exit_code == 6
    monkeypatch.setattr(DeltahubClient, "upload", real_upload)
    (lora / "README.md").unlink()  # the card was wrong: the re-run goes without it
    result = cli("push", str(lora), "--base", "llama-tiny", "--name", "bot")
    assert result.exit_code == 0, result.output
    shown = json.loads(cli("show", "bot", "--json").stdout)
    assert sorted(f["filename"] for f in shown["files"]) == sorted(
        p.name for p in lora.iterdir())
    assert [a["version"] for a in json.loads(cli("ls", "adapters", "--json").stdout)] == [1]
    with engine.connect() as conn:
        # The first run's draft (other files) is left for `deltahub gc` to remove.
        assert conn.scalar(select(func.count()).select_from(Adapter).where(
            Adapter.status == Status.READY)) == 1


def test_push_refuses_a_directory_with_nothing_to_push(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "bitdelta-ish"
    empty.mkdir()
    (empty / "delta.safetensors").write_bytes(b"")
    (empty / "notes.bin").write_bytes(b"x")
    result = cli("push-model", str(empty / "missing"), "--name", "x")
    assert result.exit_code == 2  # click: the directory does not exist
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "optimizer.pt").write_bytes(b"x")
    result = cli("push-model", str(nothing), "--name", "x")
    assert result.exit_code == 1
    assert "nothing to push" in result.output
