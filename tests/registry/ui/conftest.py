"""Content for the page tests: a base, a fine-tune, LoRA adapters (one with its report).

The models are written straight as safetensors (the tiny Llama's tensor names and
shapes), so these tests need torch and the codecs but not transformers.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from compress.lora import extract_lora
from tests.conftest import Tokens
from tests.models import TINY_LLAMA, make_finetune
from tests.registry.api import push_dataset, register_model

BASE, FINETUNE = "tiny-base", "tiny-ft"
LORA, DIRECT = "ft-lora", "direct-lora"


def _tiny_llama_tensors(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    hidden, inner, vocab = (TINY_LLAMA["hidden_size"], TINY_LLAMA["intermediate_size"],
                            TINY_LLAMA["vocab_size"])
    kv = hidden * TINY_LLAMA["num_key_value_heads"] // TINY_LLAMA["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden)}
    for i in range(TINY_LLAMA["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        shapes.update({
            f"{layer}.self_attn.q_proj.weight": (hidden, hidden),
            f"{layer}.self_attn.k_proj.weight": (kv, hidden),
            f"{layer}.self_attn.v_proj.weight": (kv, hidden),
            f"{layer}.self_attn.o_proj.weight": (hidden, hidden),
            f"{layer}.mlp.gate_proj.weight": (inner, hidden),
            f"{layer}.mlp.up_proj.weight": (inner, hidden),
            f"{layer}.mlp.down_proj.weight": (hidden, inner)})
    tensors = {name: torch.randn(shape, generator=generator) * 0.02
               for name, shape in shapes.items()}
    for i in range(TINY_LLAMA["num_hidden_layers"]):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{i}.{norm}.weight"] = torch.ones(hidden)
    tensors["model.norm.weight"] = torch.ones(hidden)
    return tensors


def write_tiny_llama(out: Path, seed: int = 0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    save_file(_tiny_llama_tensors(seed), out / "model.safetensors", metadata={"format": "pt"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "torch_dtype": "float32", **TINY_LLAMA}
    (out / "config.json").write_text(json.dumps(config))
    return out


@dataclass(frozen=True)
class UiModels:
    base: Path
    finetune: Path
    lora: Path  # extract_lora's output: PEFT files, report.json, spectra.png


@pytest.fixture(scope="session")
def ui_models(tmp_path_factory: pytest.TempPathFactory) -> UiModels:
    root = tmp_path_factory.mktemp("ui-models")
    base = write_tiny_llama(root / "base")
    finetune = make_finetune(base, root / "finetune")
    lora = root / "lora"
    extract_lora(base, finetune, lora, rank=4)
    return UiModels(base, finetune, lora)


def push_adapter_dir(client: TestClient, headers: dict[str, str], name: str, directory: Path,
                     source: str | None = None, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "base": BASE, "kind": "lora"}
    if source is not None:
        body["source"] = source
    draft = client.post("/adapters", json=body, headers=headers)
    assert draft.status_code == 201, draft.text
    adapter_id = draft.json()["id"]
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name not in skip:
            put = client.put(f"/adapters/{adapter_id}/files/{path.name}",
                             content=path.read_bytes(), headers=headers)
            assert put.status_code == 201, put.text
    final = client.post(f"/adapters/{adapter_id}/finalize", headers=headers)
    assert final.status_code in (200, 201), final.text
    result: dict[str, Any] = final.json()
    return result


@dataclass(frozen=True)
class Seeded:
    lora: dict[str, Any]  # compressed from the fine-tune, with its report
    direct: dict[str, Any]  # pushed against the base with no source, no report


@pytest.fixture
def seeded(client: TestClient, tokens: Tokens, ui_models: UiModels) -> Seeded:
    register_model(client, tokens.push, BASE, ui_models.base)
    register_model(client, tokens.push, FINETUNE, ui_models.finetune, kind="finetune",
                   base=BASE)
    lora = push_adapter_dir(client, tokens.push, LORA, ui_models.lora, source=FINETUNE)
    direct = push_adapter_dir(client, tokens.push, DIRECT, ui_models.lora,
                              skip=("report.json", "spectra.png"))
    return Seeded(lora, direct)


def secret(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: TestClient, headers: dict[str, str]) -> str:
    """Sign `client` in with the token in `headers`; returns the pages' CSRF token."""
    form = client.get("/ui/signin")
    done = client.post("/ui/signin", data={"token": secret(headers),
                                           "csrf_token": form_token(form.text)},
                       follow_redirects=False)
    assert done.status_code == 303, done.text
    return form_token(client.get("/ui/models").text)


def cell_texts(row: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def evaluation_rows(page: str) -> list[tuple[str, list[str]]]:
    """(data set, cell texts) of each row of the page's evaluation table."""
    table = re.search(r'<table class="list evaluation">(.*?)</table>', page, re.S)
    assert table is not None, "the page has no evaluation table"
    return [(html.unescape(name), cell_texts(row)) for name, row in
            re.findall(r'<tr data-dataset="([^"]*)">(.*?)</tr>', table.group(1), re.S)]


def token_file(folder: Path, name: str = "calib.safetensors", rows: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    save_file({"input_ids": torch.randint(0, 32, (rows, 16), dtype=torch.int64)}, path)
    return path


def text_file(folder: Path, name: str = "notes.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("def f(x):\n    return x + 1\n" * 20)
    return path


@pytest.fixture
def calib(client: TestClient, tokens: Tokens, seeded: Seeded, tmp_path: Path) -> None:
    """Data sets the seeded tiny fine-tune (no tokenizer.json) may and may not read."""
    push_dataset(client, tokens.push, "calib", token_file(tmp_path / "calib"))
    push_dataset(client, tokens.push, "notes", text_file(tmp_path / "notes"))
