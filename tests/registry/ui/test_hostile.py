"""Hostile content is inert: whatever a user controls renders as text, never as markup.

Names are held to the name rule by the API, so the fields that can carry markup are a
pushed report's keys and values (kept as the adapter's quality), a job's error detail
and message (written by workers from codec errors, which quote user input), and
whatever a request's path or query brings back in an error message.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from registry.infra.engines import make_session_factory, unit_of_work
from registry.tables import Job
from tests.conftest import Tokens
from tests.registry.ui.conftest import (
    BASE,
    FINETUNE,
    Seeded,
    UiModels,
    push_adapter_dir,
    sign_in,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PAYLOAD = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
ATTRIBUTE = '"><img src=x onerror=alert(2)>'
MATH_TEXT = r"$\frac{$"  # matplotlib's math text parser fails on it


def _hostile_lora(ui_models: UiModels, folder: Path) -> Path:
    shutil.copytree(ui_models.lora, folder)
    report = json.loads((folder / "report.json").read_text())
    report[PAYLOAD] = ATTRIBUTE
    report["note"] = PAYLOAD
    report["verified_with"] = PAYLOAD + ATTRIBUTE  # shown in a title attribute
    report["summary"]["comment"] = PAYLOAD
    report["modules"][0]["module"] = PAYLOAD  # drawn into a plot's labels
    report["modules"][1]["module"] = MATH_TEXT  # drawn as written, not parsed as math
    report["distillation"] = {"losses": [2.0, 1.5, 1.2], "dataset": PAYLOAD}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def _assert_inert(html: str, where: str) -> None:
    assert PAYLOAD not in html, where
    assert "<img src=x" not in html, where
    assert ESCAPED in html or "&lt;img src=x" in html, f"{where}: payload not shown at all"


def test_every_user_field_renders_as_text(client: TestClient, tokens: Tokens, seeded: Seeded,
                                          ui_models: UiModels, engine: Engine,
                                          tmp_path: Path) -> None:
    adapter = push_adapter_dir(client, tokens.push, "hostile", _hostile_lora(
        ui_models, tmp_path / "hostile"), source=FINETUNE)
    job = client.post(f"/models/{FINETUNE}/compress?method=bitdelta",
                      headers=tokens.compress).json()
    with unit_of_work(make_session_factory(engine)) as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(
            error_name="CodecError", error_detail=PAYLOAD + ATTRIBUTE, message=PAYLOAD))
    sign_in(client, tokens.admin)
    pages = {"adapter": f"/ui/adapters/{adapter['id']}",
             "lineage": f"/ui/models/{BASE}",
             "jobs": "/ui/jobs", "job": f"/ui/jobs/{job['id']}",
             "fine-tune": f"/ui/models/{FINETUNE}",
             "alias query": f"/ui/models/{BASE}?alias={PAYLOAD}",
             "model path": f"/ui/models/{quote(ATTRIBUTE, safe='')}"}
    for where, url in pages.items():
        answer = client.get(url)
        assert answer.headers["content-type"].startswith("text/html"), where
        assert "script-src 'self'" in answer.headers["content-security-policy"], where
        _assert_inert(answer.text, where)
    # The pictures draw the hostile labels as pixels.
    for kind in ("errors", "spectra", "loss"):
        svg = client.get(f"/ui/adapters/{adapter['id']}/plots/{kind}.svg")
        assert svg.status_code == 200, kind
        assert svg.content.startswith(b"<?xml"), kind
    # The progress poll is JSON, and its script writes it with textContent.
    polled = client.get(f"/ui/jobs/progress?ids={job['id']}")
    assert polled.headers["content-type"] == "application/json"
    assert polled.json()["jobs"][0]["error"]["detail"] == PAYLOAD + ATTRIBUTE
    script = Path("registry/ui/static/jobs.js").read_text()
    assert "innerHTML" not in script
    assert "textContent" in script


def _hostile_quality_lora(ui_models: UiModels, folder: Path) -> Path:
    """A report claiming an evaluation and a distillation, with markup and junk types."""
    shutil.copytree(ui_models.lora, folder)
    report = json.loads((folder / "report.json").read_text())
    report["evaluation"] = {"datasets": [
        {"name": PAYLOAD, "tokens": ATTRIBUTE, "base": {"loss": PAYLOAD, "perplexity": 3.0},
         "finetune": [1, 2], "compressed": {"loss": 1.25, "perplexity": None},
         "gain_kept": ATTRIBUTE},
        "not a row", {"name": ATTRIBUTE}]}
    report["distillation"] = {"losses": [2.0, PAYLOAD, 1.0], "initial_loss": PAYLOAD,
                              "final_loss": 1.0, "steps": ATTRIBUTE, "lr": [1],
                              "calibration": [{"name": PAYLOAD, "rows": 2, "seq_len": 3},
                                              ATTRIBUTE]}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_data_sets_and_claimed_evaluations_render_as_text(
        client: TestClient, tokens: Tokens, seeded: Seeded, ui_models: UiModels,
        tmp_path: Path) -> None:
    created = client.post("/datasets", json={"name": "hostile-data", "description": PAYLOAD},
                          headers=tokens.push)
    assert created.status_code == 201, created.text
    text = tmp_path / "notes.txt"
    text.write_text(PAYLOAD * 3)
    assert client.put("/datasets/hostile-data/files/notes.txt", content=text.read_bytes(),
                      headers=tokens.push).status_code == 201
    assert client.post("/datasets/hostile-data/finalize",
                       headers=tokens.push).status_code == 200
    adapter = push_adapter_dir(client, tokens.push, "claims", _hostile_quality_lora(
        ui_models, tmp_path / "claims"), source=FINETUNE)
    sign_in(client, tokens.admin)
    listing = client.get("/ui/datasets")
    _assert_inert(listing.text, "data sets")
    assert 'data-dataset="hostile-data"' in listing.text
    page = client.get(f"/ui/adapters/{adapter['id']}")
    assert page.status_code == 200
    _assert_inert(page.text, "adapter with a claimed evaluation")
    # The rows that are objects are shown, escaped; figures of the wrong type show as "–".
    rows = re.findall(r'<tr data-dataset="([^"]*)">(.*?)</tr>', page.text, re.S)
    assert [html.unescape(name) for name, _ in rows] == [PAYLOAD, ATTRIBUTE]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[0][1], re.S)
    assert [c.strip() for c in cells[1:]] == ["– tokens", "–", "3.000", "–", "–", "1.250", "–",
                                             "–", "–"]
    assert "<tr><th>Loss</th><td>– → 1.000</td></tr>" in page.text  # junk initial loss
    svg = client.get(f"/ui/adapters/{adapter['id']}/plots/loss.svg")
    assert svg.status_code == 200
    assert svg.content.startswith(b"<?xml")
    # The fine-tune's compress form offers the data set by its (checked) name only.
    form = client.get(f"/ui/models/{FINETUNE}").text
    assert 'name="evaluate" value="hostile-data"' in form
    _assert_inert(form + ESCAPED, "compress form")
