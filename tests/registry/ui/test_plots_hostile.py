"""Hostile reports on the pages and their plots.

A row stored before reports were checked at push (numbers no float holds) still renders;
names are drawn as short literal labels (never math text); one picture is drawn once for
any number of requests at once, pictures of other adapters do not wait for it, and past
the drawing slots a request gets a 503 rather than a place in a queue.
"""

from __future__ import annotations

import hashlib
import html
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from compress.filenames import REPORT_FILE
from registry.adapters.quality import Quality
from registry.adapters.repository import AdapterRepository
from registry.infra.engines import make_session_factory, unit_of_work
from registry.storage.local import LocalBlobStore
from registry.tables import Blob
from registry.ui import plots
from registry.ui.plot_cache import PlotCache
from tests.conftest import Tokens
from tests.registry.ui.conftest import (
    BASE,
    FINETUNE,
    Seeded,
    UiModels,
    evaluation_rows,
    push_adapter_dir,
    sign_in,
)

# The unit tests below need no database; the page tests run on one.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
HUGE = 10**400
MATH_TEXT = [r"$\frac{$", "a$b$c", "$$", r"\$x$", "$x^{2$"]
WAIT_S = 60  # how long a test waits for a thread before it fails (never reached when green)


def _put_blob(store: LocalBlobStore, data: bytes) -> str:
    sha256 = hashlib.sha256(data).hexdigest()
    writer = store.start_upload()
    writer.write(data)
    store.commit(writer.finish(), sha256)
    return sha256


def _store_directly(engine: Engine, store: LocalBlobStore, adapter_id: int,
                    quality: dict[str, Any], report: dict[str, Any]) -> None:
    """What an adapter pushed before reports were checked may hold: written straight
    into its row, and its report.json swapped for `report`."""
    data = json.dumps(report).encode()
    sha256 = _put_blob(store, data)
    with unit_of_work(make_session_factory(engine)) as session:
        adapter = AdapterRepository(session).by_id(adapter_id, full=True)
        assert adapter is not None
        session.add(Blob(sha256=sha256, size=len(data)))
        adapter.quality = quality
        [file] = [f for f in adapter.files if f.filename == REPORT_FILE]
        file.sha256, file.size = sha256, len(data)


@SQLITE
def test_a_stored_report_with_huge_numbers_renders_what_is_valid(
        client: TestClient, tokens: Tokens, seeded: Seeded, engine: Engine,
        store: LocalBlobStore) -> None:
    adapter_id = seeded.lora["id"]
    quality = {**seeded.lora["quality"], "gain_kept": HUGE, "evaluation": {"datasets": [
        {"name": "held-out", "tokens": HUGE, "base": {"loss": 2.0, "perplexity": HUGE},
         "finetune": {"loss": 1.0}, "compressed": {"loss": HUGE}, "gain_kept": HUGE}]},
        "distillation": {"losses": [2.0, HUGE, 1.0], "initial_loss": HUGE,
                         "final_loss": 1.0, "steps": HUGE, "lr": HUGE}}
    report = {"tensors": [{"name": f"model.layers.{i}.mlp.up_proj.weight",
                           "kind": "bitdelta", "weight_rel_error": error}
                          for i, error in enumerate([0.1, HUGE, 0.3])],
              "modules": [{"module": "model.layers.0.self_attn.q_proj", "error": HUGE,
                           "rank": HUGE, "singular_values": [3.0, HUGE, 1.0]}]}
    _store_directly(engine, store, adapter_id, quality, report)
    sign_in(client, tokens.read)
    page = client.get(f"/ui/adapters/{adapter_id}")
    assert page.status_code == 200
    [(name, cells)] = evaluation_rows(page.text)
    assert (name, cells[1:]) == ("held-out",
                                 ["– tokens", "2.000", "–", "1.000", "–", "–", "–",
                                  "improved by 1.000", "–"])
    assert "<tr><th>Loss</th><td>– → 1.000</td></tr>" in page.text
    assert client.get(f"/ui/models/{BASE}").status_code == 200  # the lineage's gain kept
    assert client.get(f"/ui/models/{FINETUNE}").status_code == 200
    for kind in ("errors", "spectra", "loss"):
        svg = client.get(f"/ui/adapters/{adapter_id}/plots/{kind}.svg")
        assert (svg.status_code, svg.content[:5]) == (200, b"<?xml"), kind


def _report_with(ui_models: UiModels, folder: Path, names: list[str]) -> Path:
    """The extracted LoRA, its report's modules renamed (and a verification of them)."""
    shutil.copytree(ui_models.lora, folder)
    report = json.loads((folder / REPORT_FILE).read_text())
    modules = [{**report["modules"][i % len(report["modules"])], "module": name}
               for i, name in enumerate(names)]
    report["modules"] = modules
    report["verify"] = {"layers": [{"module": name, "compression_rel_error": 0.01}
                                   for name in names]}
    (folder / REPORT_FILE).write_text(json.dumps(report))
    return folder


@SQLITE
def test_math_text_in_names_is_drawn_literally(client: TestClient, tokens: Tokens,
                                               seeded: Seeded, ui_models: UiModels,
                                               tmp_path: Path) -> None:
    adapter = push_adapter_dir(client, tokens.push, "math", _report_with(
        ui_models, tmp_path / "math", MATH_TEXT), source=FINETUNE)
    sign_in(client, tokens.read)
    for kind in ("errors", "spectra", "verify"):
        svg = client.get(f"/ui/adapters/{adapter['id']}/plots/{kind}.svg")
        assert (svg.status_code, svg.content[:5]) == (200, b"<?xml"), kind


def test_labels_are_short_literal_single_lines() -> None:
    assert plots.label(r"$\frac{$") == r"\$\frac{\$"
    assert plots.label("base_model.model.model.layers.0.q_proj.weight") == "layers.0.q_proj"
    assert plots.label("a\nb\x00c") == "a b c"
    long = plots.label("model.layers.7." + "x" * 5000 + ".mlp.down_proj.weight")
    assert len(long) == plots.MAX_LABEL_CHARS
    assert long.startswith("layers.7.")
    assert long.endswith("x.mlp.down_proj")
    assert "…" in long


def test_a_figure_of_long_names_has_bounded_labels() -> None:
    names = [f"model.layers.{i}." + "x" * 5000 for i in range(plots.MAX_BARS)]
    document = plots.Figures.of(None, {"modules": [
        {"module": n, "error": 0.1, "singular_values": [2.0]} for n in names]})
    figure = plots.PLOTS["errors"][2](document)
    texts = [t.get_text() for t in figure.axes[0].get_yticklabels()]  # names the layers
    assert len(texts) == plots.MAX_BARS
    assert max(map(len, texts)) <= plots.MAX_LABEL_CHARS
    # The spectra: a panel per module kind (a name's last part), titled with it, bounded.
    figure = plots.PLOTS["spectra"][2](document)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert len(titles) == 1  # every name ends in the same cut "xxx…"
    assert len(titles[0]) <= plots.MAX_LABEL_CHARS + len("\n64 modules")
    many = plots.Figures.of(None, {"modules": [
        {"module": f"layers.0.kind{i}", "rank": 1, "singular_values": [2.0, 1.0]}
        for i in range(40)]})
    panels = [ax.get_title() for ax in plots.PLOTS["spectra"][2](many).axes if ax.get_title()]
    assert len(panels) == plots.MAX_PANELS
    assert panels[-1].startswith(f"{plots.OTHER_KINDS}\n29 modules")
    long_loss = plots.Figures.of(Quality.parse({"distillation": {"losses": [1.0] * 100_001}}),
                                 None)
    curve = plots.loss_curve(long_loss)
    assert len(curve) <= plots.MAX_POINTS
    assert curve[-1][0] == 100_000.0  # the last step is kept


@dataclass
class Gate:
    """Makes the drawing of chosen pictures wait until the test releases it."""

    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    calls: int = 0


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """Holds every drawing of the `errors` plot whose modules are not named `fast.*`."""
    found = Gate()
    lock = threading.Lock()
    title, has, draw = plots.PLOTS["errors"]

    def slow(document: plots.Figures) -> Any:
        if not any(n.startswith("fast.") for n, _ in plots.layer_errors(document)):
            with lock:
                found.calls += 1
            found.started.set()
            assert found.release.wait(WAIT_S)
        return draw(document)

    monkeypatch.setitem(plots.PLOTS, "errors", (title, has, slow))
    yield found
    found.release.set()  # whatever failed, no drawing thread is left waiting


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


@SQLITE
def test_concurrent_requests_of_a_picture_share_one_drawing(
        app: FastAPI, client: TestClient, tokens: Tokens, seeded: Seeded,
        gate: Gate) -> None:
    sign_in(client, tokens.read)
    cache: PlotCache = app.state.plot_cache
    url = f"/ui/adapters/{seeded.lora['id']}/plots/errors.svg"
    with ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(client.get, url) for _ in range(4)]
        try:
            assert gate.started.wait(WAIT_S)
            _wait_for(lambda: cache.shared == 3, "the other requests to join the drawing")
        finally:
            gate.release.set()
        results = [a.result(timeout=WAIT_S) for a in answers]
    assert [r.status_code for r in results] == [200] * 4
    assert len({r.content for r in results}) == 1
    assert (gate.calls, cache.renders) == (1, 1)
    assert client.get(url).content == results[0].content  # and then from the cache
    assert cache.renders == 1


@pytest.fixture
def fast_adapter(client: TestClient, tokens: Tokens, seeded: Seeded, ui_models: UiModels,
                 tmp_path: Path) -> dict[str, Any]:
    return push_adapter_dir(client, tokens.push, "fast", _report_with(
        ui_models, tmp_path / "fast", ["fast.q_proj", "fast.v_proj"]), source=FINETUNE)


@SQLITE
def test_a_slow_drawing_does_not_hold_up_another_adapters(
        client: TestClient, tokens: Tokens, seeded: Seeded, fast_adapter: dict[str, Any],
        gate: Gate) -> None:
    sign_in(client, tokens.read)
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(client.get, f"/ui/adapters/{seeded.lora['id']}/plots/errors.svg")
        try:
            assert gate.started.wait(WAIT_S)
            fast = pool.submit(client.get,
                               f"/ui/adapters/{fast_adapter['id']}/plots/errors.svg")
            answer = fast.result(timeout=WAIT_S)
            assert (answer.status_code, answer.content[:5]) == (200, b"<?xml")
            assert not slow.done()
        finally:
            gate.release.set()
        assert slow.result(timeout=WAIT_S).status_code == 200


@SQLITE
def test_past_the_drawing_slots_a_picture_is_refused_for_now(
        app: FastAPI, client: TestClient, tokens: Tokens, seeded: Seeded,
        fast_adapter: dict[str, Any], gate: Gate) -> None:
    app.state.plot_cache = PlotCache(renders=1, retry_after_seconds=3)
    sign_in(client, tokens.read)
    fast_url = f"/ui/adapters/{fast_adapter['id']}/plots/errors.svg"
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.get, f"/ui/adapters/{seeded.lora['id']}/plots/errors.svg")
        try:
            assert gate.started.wait(WAIT_S)
            busy = client.get(fast_url)
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "3"
            assert "PlotsBusy" in busy.text
        finally:
            gate.release.set()
        assert slow.result(timeout=WAIT_S).status_code == 200
    assert client.get(fast_url).status_code == 200  # a slot is free again


@SQLITE
def test_a_regressing_set_says_so_beside_its_gain_kept(
        client: TestClient, tokens: Tokens, seeded: Seeded, engine: Engine,
        store: LocalBlobStore) -> None:
    """Issue 27: off its domain the fine-tune got worse (1.283 → 1.503); 0.985 there keeps
    that regression, and the page must say so rather than call it an improvement kept."""
    adapter_id = seeded.lora["id"]
    quality = {**seeded.lora["quality"], "gain_kept": 0.985, "evaluation": {"datasets": [
        {"name": "english", "tokens": 1000, "base": {"loss": 1.283},
         "finetune": {"loss": 1.503}, "compressed": {"loss": 1.4997}, "gain_kept": 0.985},
        {"name": "flat", "tokens": 1000, "base": {"loss": 2.0}, "finetune": {"loss": 2.0004},
         "compressed": {"loss": 1.0}, "gain_kept": -2500.0}]}}
    _store_directly(engine, store, adapter_id, quality, {})
    sign_in(client, tokens.read)
    page = client.get(f"/ui/adapters/{adapter_id}").text
    (_, english), (_, flat) = evaluation_rows(page)
    assert english[-2:] == ["regressed by 0.220", "0.985 (of a regression: lower is better)"]
    assert flat[-2:] == ["no meaningful change", "–"]  # never −2500
    assert "keeps the fine-tune's behaviour" in html.unescape(page)
    assert "where it regressed" in html.unescape(page)
