"""Adapter and job pages show what a person reads, not Python values (issue 27, item 5).

Real content: the seeded LoRA with its pushed report, and BitDelta (distilled and
evaluated, and plain) and LoRA adapters made by jobs a worker runs on the seeded tiny
fine-tune. Every page must hold no `None`, `False`, `True`, dict or list repr outside
its code snippets; settings read as words ("Distillation: off", "Rank: 2"); figures
name their unit and what they were measured on; the raw record is one "JSON" link away.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.jobs.drive import run_all
from tests.registry.ui.conftest import FINETUNE, Seeded, sign_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
PYTHON_VALUES = re.compile(r"\bNone\b|\bFalse\b|\bTrue\b|\{'|\[\{|\['")
# A page of one adapter of 14 modules: its words, tables and plot links, no dumped document.
MAX_PAGE_BYTES = 40_000


def _settings(page: str, kind: str) -> dict[str, str]:
    found = re.search(rf'<dl class="settings {kind}">(.*?)</dl>', page, re.S)
    assert found is not None, f"no {kind} settings"
    return {html.unescape(k): html.unescape(v) for k, v in
            re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", found.group(1), re.S)}


def _figure(page: str, key: str) -> list[str]:
    found = re.search(rf'<tr data-figure="{re.escape(key)}">(.*?)</tr>', page, re.S)
    assert found is not None, f"no figure {key}"
    return [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in
            re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), re.S)]


def _python_values(page: str) -> list[str]:
    """Python reprs in the page's main part, its code snippets (Python) left out."""
    main = page[page.index("<main"):]
    prose = html.unescape(re.sub(r"<pre>.*?</pre>", "", main, flags=re.S))
    return [prose[max(0, m.start() - 60):m.end() + 20] for m in PYTHON_VALUES.finditer(prose)]


def _job(client: TestClient, tokens: Tokens, method: str, body: dict[str, Any]) -> int:
    started = client.post(f"/models/{FINETUNE}/compress?method={method}", json=body,
                          headers=tokens.compress)
    assert started.status_code == 202, started.text
    job_id: int = started.json()["id"]
    return job_id


@pytest.mark.slow
@pytest.mark.usefixtures("calib")
def test_adapter_and_job_pages_read_as_words(app: FastAPI, client: TestClient, tokens: Tokens,
                                             seeded: Seeded) -> None:
    distilled = _job(client, tokens, "bitdelta", {
        "name": "distilled", "distill": {"dataset": "calib", "steps": 3, "seq_len": 16},
        "evaluate": {"datasets": ["calib"], "seq_len": 16}})
    plain = _job(client, tokens, "bitdelta", {"name": "plain"})
    lora = _job(client, tokens, "lora", {"name": "by-job", "rank": 2})
    assert run_all(app) == 3
    sign_in(client, tokens.read)
    pages = {"pushed": f"/ui/adapters/{seeded.lora['id']}"}
    for name, job_id in (("distilled", distilled), ("plain", plain), ("lora", lora)):
        job = client.get(f"/jobs/{job_id}", headers=tokens.read).json()
        assert job["status"] == "succeeded", job
        pages[f"job {name}"] = f"/ui/jobs/{job_id}"
        pages[name] = f"/ui/adapters/{job['adapter']['id']}"
    text = {name: client.get(url).text for name, url in pages.items()}
    for name, page in text.items():
        assert _python_values(page) == [], name
        assert len(page.encode()) < MAX_PAGE_BYTES, (name, len(page.encode()))

    assert _settings(text["job distilled"], "job-settings")["Distillation"].startswith(
        "on calib: 3 steps")
    assert _settings(text["job plain"], "job-settings")["Distillation"] == "off"
    assert _settings(text["job plain"], "job-settings")["Error bound"] == "none"
    assert _settings(text["job lora"], "job-settings")["Rank"] == "2"
    assert _settings(text["lora"], "job-settings")["Rank"] == "2"  # the adapter shows its job's
    assert _settings(text["pushed"], "params")["Rank"] == "4"
    assert _settings(text["pushed"], "made-with")["Only the target modules"] == "no"

    what, _, unit, measured_on, good = _figure(text["distilled"], "output_rel_error_max")
    assert what.startswith("output_rel_error, worst layer: ‖y − y_ft‖ / ‖y_ft‖")
    assert (unit, good) == ("relative (a ratio of norms)", "lower; 0 is exact")
    assert measured_on.endswith("(after distillation)")
    # Item 3: verification measures the uploaded (distilled) delta's weight errors too; the
    # codec's, from before distillation changed α, stay beside them, each labelled.
    after = _figure(text["distilled"], "weight_rel_error_max")
    before = _figure(text["distilled"], "weight_rel_error_max_before_distillation")
    assert after[3].endswith("(after distillation, verified)")
    assert before[0].startswith("weight_rel_error, worst layer before distillation")
    assert before[3].endswith("(before distillation changed α)")
    assert "weight error ≤" in text["distilled"]
    assert "(after distillation)" in text["distilled"]
    picture = client.get(f"{pages['distilled']}/plots/errors.svg").text
    assert "before distillation (the codec's)" in picture
    assert "after distillation (verified)" in picture
    assert "distillation" not in _figure(text["plain"], "weight_rel_error_max")[3]
    # Undistilled, verification's weight errors are the codec's: one quantity, one value.
    plain_id = pages["plain"].rsplit("/", 1)[1]
    quality = client.get(f"/adapters/{plain_id}", headers=tokens.read).json()["quality"]
    codec = {t["name"].removesuffix(".weight"): t for t in quality["tensors"]}
    for layer in quality["verify"]["layers"]:
        for quantity in ("delta_rel_error", "weight_rel_error"):
            assert layer[quantity] == pytest.approx(codec[layer["module"]][quantity],
                                                    rel=1e-4), (layer["module"], quantity)
    assert _figure(text["distilled"], "distill_loss_final")[2] == \
        "KL divergence to the fine-tune (nats per token)"
    assert _figure(text["pushed"], "delta_rel_error_max")[1] == \
        f"{seeded.lora['quality']['delta_rel_error_max']:.4g}"

    # The raw records, one link away, as the API answers them.
    for name in ("pushed", "distilled"):
        adapter_id = pages[name].rsplit("/", 1)[1]
        link = f"/ui/adapters/{adapter_id}/adapter.json"
        assert f'href="{link}"' in text[name]
        raw = client.get(link)
        assert raw.headers["content-type"] == "application/json"
        assert raw.json() == client.get(f"/adapters/{adapter_id}", headers=tokens.read).json()
    link = f"/ui/jobs/{distilled}/job.json"
    assert f'href="{link}"' in text["job distilled"]
    assert client.get(link).json() == client.get(f"/jobs/{distilled}",
                                                 headers=tokens.read).json()
    client.cookies.clear()
    assert client.get(link, follow_redirects=False).status_code == 303  # needs a session
