"""Data sets, distillation and gain kept on the pages.

A BitDelta job started from the compress form, distilled and evaluated on registered
data sets of the real tiny fine-tune (tests/finetune.py, with its tokenizer.json), is
run by a worker; its adapter page must then show the same figures as the API's quality.
The form's other paths (the advanced JSON merged under the fields, refusals) and the
data sets page run on small data sets written here.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from registry.settings import Settings
from registry.ui.render import human_bytes
from tests.conftest import Tokens
from tests.finetune import FinetunePair
from tests.registry.api import push_dataset, register_finetune_pair
from tests.registry.jobs.drive import run_all
from tests.registry.ui.conftest import (
    FINETUNE,
    Seeded,
    cell_texts,
    evaluation_rows,
    sign_in,
    text_file,
    token_file,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PAIR_BASE, PAIR_FT = "pair-base", "pair-ft"
PAGE_SIZE = 2


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"DEFAULT_PAGE_SIZE": PAGE_SIZE})


def _facts(page: str, title: str) -> str:
    found = re.search(rf"<tr><th>{title}</th><td>(.*?)</td></tr>", page, re.S)
    assert found is not None, f"no {title!r} row"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def _adapter_row(page: str, ref: str) -> str:
    found = re.search(rf'<li class="adapter">\s*<a class="name" href="/ui/adapters/\d+">'
                      rf"{re.escape(ref)}</a>(.*?)</li>", page, re.S)
    assert found is not None, f"no lineage row for {ref}"
    return found.group(1)


@pytest.fixture
def pair(client: TestClient, tokens: Tokens, finetune_pair: FinetunePair) -> FinetunePair:
    register_finetune_pair(client, tokens.push, finetune_pair, PAIR_BASE, PAIR_FT)
    return finetune_pair


def _start_from_form(client: TestClient, csrf: str) -> int:
    page = client.get(f"/ui/models/{PAIR_FT}").text
    for name in ("py-train", "py-heldout", "prose-heldout"):
        assert f'<option value="{name}">' in page  # calibration and headline selects
        assert f'name="evaluate" value="{name}"' in page  # evaluation checkboxes
    form = {"csrf_token": csrf, "method": "bitdelta", "name": "from-form",
            "distill_dataset": "py-train", "distill_steps": "20", "distill_lr": "1e-3",
            "distill_seq_len": "64",
            # Checked in the page's order; the headline select puts py-heldout first.
            "evaluate": ["prose-heldout", "py-heldout"], "evaluate_headline": "py-heldout",
            "evaluate_seq_len": "64", "evaluate_max_batches": "2",
            "advanced": '{"distill": {"batch_size": 4}}'}
    started = client.post(f"/ui/models/{PAIR_FT}/compress", data=form, follow_redirects=False)
    assert started.status_code == 303, started.text
    return int(started.headers["location"].rsplit("/", 1)[1])


@pytest.mark.slow
def test_a_job_from_the_form_shows_its_evaluation_and_distillation(
        app: FastAPI, client: TestClient, tokens: Tokens, pair: FinetunePair) -> None:
    csrf = sign_in(client, tokens.admin)
    job_id = _start_from_form(client, csrf)
    params = client.get(f"/jobs/{job_id}", headers=tokens.read).json()["params"]
    assert {k: params["distill"][k] for k in ("steps", "lr", "seq_len", "batch_size")} == {
        "steps": 20, "lr": 1e-3, "seq_len": 64, "batch_size": 4}
    assert [d["name"] for d in params["evaluate"]["datasets"]] == ["py-heldout",
                                                                  "prose-heldout"]
    assert run_all(app) == 1
    job = client.get(f"/jobs/{job_id}", headers=tokens.read).json()
    assert job["status"] == "succeeded", job
    adapter_id = job["adapter"]["id"]
    quality = client.get(f"/adapters/{adapter_id}", headers=tokens.read).json()["quality"]

    page = client.get(f"/ui/adapters/{adapter_id}").text
    expected = quality["evaluation"]["datasets"]
    rows = evaluation_rows(page)
    assert [name for name, _ in rows] == [d["name"] for d in expected]
    assert rows[0][0] == "python_heldout.txt"  # the headline data set comes first
    for (name, cells), want in zip(rows, expected, strict=True):
        figures = [f"{want[m][f]:.3f}" for m in ("base", "finetune", "compressed")
                   for f in ("loss", "perplexity")]
        assert cells[2:8] == figures, name
        change = "improved" if want["finetune"]["loss"] < want["base"]["loss"] else "regressed"
        moved = abs(want["finetune"]["loss"] - want["base"]["loss"])
        assert cells[8] == f"{change} by {moved:.3f}", name
        assert cells[9].startswith(f"{want['gain_kept']:.3f}"), name
    assert "headline" in rows[0][1][0]
    assert quality["gain_kept"] == expected[0]["gain_kept"]
    assert "the share of the fine-tune's change in loss" in html.unescape(page)
    # Distilled: verification measured the distilled delta's weight errors; the codec's,
    # which predate α's training, are shown beside them, and the page says which is which.
    assert "weight error ≤" in page
    assert "(after distillation)" in page
    assert "before distillation changed α" in page

    distill = quality["distillation"]
    assert _facts(page, "Loss") == (f"{distill['initial_loss']:.3f} → "
                                    f"{distill['final_loss']:.3f}")
    assert _facts(page, "Steps") == "20"
    assert _facts(page, "Learning rate") == "0.001"
    assert _facts(page, "Calibration data").startswith("py-train: python_train.safetensors (")
    # A job-made adapter keeps its per-layer figures: weight errors, verification per
    # layer, and the distillation's loss curve, each drawn.
    for kind in ("loss", "errors", "verify"):
        url = f"/ui/adapters/{adapter_id}/plots/{kind}.svg"
        assert f'src="{url}"' in page
        svg = client.get(url)
        assert svg.status_code == 200
        assert svg.headers["content-type"] == "image/svg+xml"
        assert svg.content.startswith(b"<?xml")

    lineage = client.get(f"/ui/models/{PAIR_BASE}").text
    assert f"gain kept {100 * quality['gain_kept']:.1f} %" in _adapter_row(lineage,
                                                                           "from-form@1")


def test_the_advanced_json_is_merged_under_the_fields(client: TestClient, tokens: Tokens,
                                                      calib: None) -> None:
    csrf = sign_in(client, tokens.admin)
    form = {"csrf_token": csrf, "method": "bitdelta", "evaluate_seq_len": "32",
            "distill_steps": "7",
            "advanced": '{"evaluate": {"datasets": ["calib"], "max_batches": 3},'
                        ' "distill": {"dataset": "calib", "steps": 99, "seed": 5,'
                        ' "seq_len": 64}}'}
    started = client.post(f"/ui/models/{FINETUNE}/compress", data=form, follow_redirects=False)
    assert started.status_code == 303, started.text
    job_id = started.headers["location"].rsplit("/", 1)[1]
    params = client.get(f"/jobs/{job_id}", headers=tokens.read).json()["params"]
    assert params["evaluate"]["datasets"][0]["name"] == "calib"
    assert (params["evaluate"]["seq_len"], params["evaluate"]["max_batches"]) == (32, 3)
    assert params["distill"]["dataset"]["name"] == "calib"
    assert (params["distill"]["steps"], params["distill"]["seed"]) == (7, 5)  # field wins


BAD_FORMS = [
    ({"method": "lora", "rank": "2", "distill_dataset": "calib"}, 422,
     "does not apply to method 'lora'"),
    ({"method": "lora", "rank": "2", "advanced": '{"distill": {"dataset": "calib"}}'}, 422,
     "distill trains BitDelta's scales"),
    ({"method": "bitdelta", "distill_dataset": "nope"}, 404, "no data set 'nope'"),
    ({"method": "bitdelta", "evaluate": ["nope"]}, 404, "no data set 'nope'"),
    ({"method": "bitdelta", "distill_dataset": "calib", "distill_steps": "many"}, 422,
     "distillation steps must be a number"),
    ({"method": "bitdelta", "distill_dataset": "calib", "distill_steps": "0"}, 422,
     "distill.steps"),
    ({"method": "bitdelta", "distill_dataset": "calib", "distill_lr": "nan"}, 422,
     "distill.lr"),
    ({"method": "bitdelta", "distill_lr": "1e-3"}, 422, "without a calibration data set"),
    ({"method": "bitdelta", "evaluate_max_batches": "2"}, 422,
     "without an evaluation data set"),
    ({"method": "bitdelta", "distill_dataset": "../x"}, 422, "distill.dataset"),
    ({"method": "bitdelta", "evaluate": ["calib", "calib"]}, 422, "names a data set twice"),
    ({"method": "bitdelta", "evaluate": ["notes"]}, 422, "tokenizer.json"),
]


@pytest.mark.parametrize(("fields", "status", "message"), BAD_FORMS)
def test_bad_data_set_fields_say_what_is_wrong(client: TestClient, tokens: Tokens,
                                               calib: None, fields: dict[str, Any],
                                               status: int, message: str) -> None:
    csrf = sign_in(client, tokens.admin)
    answer = client.post(f"/ui/models/{FINETUNE}/compress", data={"csrf_token": csrf,
                                                                  **fields})
    assert answer.status_code == status, answer.text[-600:]
    assert answer.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in answer.text
    assert message in html.unescape(answer.text), answer.text[-600:]
    assert client.get("/jobs", headers=tokens.read).json()["items"] == []


def test_data_sets_page_lists_files_sizes_and_digests(client: TestClient, tokens: Tokens,
                                                      seeded: Seeded, tmp_path: Path) -> None:
    calib = push_dataset(client, tokens.push, "calib", token_file(tmp_path / "c"),
                         token_file(tmp_path / "c", "more.safetensors", rows=8),
                         description="pre-tokenized rows")
    notes = push_dataset(client, tokens.push, "notes", text_file(tmp_path / "n"))
    push_dataset(client, tokens.push, "half", text_file(tmp_path / "h"), finalize=False)
    sign_in(client, tokens.read)
    assert 'href="/ui/datasets"' in client.get("/ui/models").text  # in the navigation
    first = client.get("/ui/datasets").text
    rows = dict(re.findall(r'<tr data-dataset="([^"]+)">(.*?)</tr>', first, re.S))
    assert list(rows) == ["half", "notes"]  # newest first, PAGE_SIZE a page
    assert cell_texts(rows["notes"])[1:] == [
        "ready", f"notes.txt {human_bytes(notes['files'][0]['size'])}",
        human_bytes(notes["total_bytes"]),
        "yes (text: the model's tokenizer.json reads it)", notes["content_digest"]]
    assert cell_texts(rows["half"])[-1] == "pending"
    more = re.search(r'<a rel="next" href="\?([^"]+)">', first)
    assert more is not None
    second = client.get(f"/ui/datasets?{html.unescape(more.group(1))}").text
    rows = dict(re.findall(r'<tr data-dataset="([^"]+)">(.*?)</tr>', second, re.S))
    assert list(rows) == ["calib"]
    cells = cell_texts(rows["calib"])
    assert cells[0].startswith("calib")
    assert "pre-tokenized rows" in cells[0]  # the description, under the name
    sizes = {f["filename"]: f["size"] for f in calib["files"]}
    assert set(sizes) == {"calib.safetensors", "more.safetensors"}
    for filename, size in sizes.items():
        assert f"{filename} {human_bytes(size)}" in cells[2]
    assert cells[4:] == ["no", calib["content_digest"]]
    assert 'rel="next"' not in second
    ready = client.get("/ui/datasets?status=ready").text
    assert re.findall(r'<tr data-dataset="([^"]+)">', ready) == ["notes", "calib"]
    assert client.get("/ui/datasets?status=bogus").status_code == 422
    assert client.get("/ui/datasets?page_token=garbage").status_code in (400, 422)
    client.cookies.clear()
    assert client.get("/ui/datasets", follow_redirects=False).status_code == 303
