"""The compress form after a refusal, the data sets it offers, and the favicon (issue 27,
item 8): a refused form comes back as the user filled it, with the error beside the
field; text data sets are not offered to a model with no tokenizer; no page asks for a
favicon that 404s."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tokens
from tests.registry.api import push_dataset
from tests.registry.ui.conftest import FINETUNE, Seeded, sign_in

URL = f"/ui/models/{FINETUNE}/compress"


def _tag(page: str, pattern: str) -> str:
    found = re.search(pattern, page)
    assert found is not None, f"no {pattern!r} in the page"
    return found.group(0)


@pytest.fixture
def text_dataset(client: TestClient, tokens: Tokens, tmp_path: Path) -> str:
    path = tmp_path / "notes.txt"
    path.write_text("def add(a, b):\n    return a + b\n" * 20)
    push_dataset(client, tokens.push, "notes", path)
    return "notes"


def test_a_refused_form_comes_back_filled_with_the_error_beside_the_field(
        client: TestClient, tokens: Tokens, seeded: Seeded) -> None:
    csrf = sign_in(client, tokens.admin)
    sent = {"csrf_token": csrf, "method": "lora", "name": "mine", "alias": "prod",
            "rank": "two", "targets": "q_proj, v_proj", "targets_only": "on",
            "advanced": '{"seed": 1}'}
    answer = client.post(URL, data=sent)
    assert answer.status_code == 422
    page = answer.text
    assert 'role="alert"' in page
    assert "InvalidJobParameters" in page
    assert _tag(page, r'<option value="lora"[^>]*>').endswith(" selected>")
    assert 'value="mine"' in _tag(page, r'<input name="name"[^>]*>')
    assert 'value="prod"' in _tag(page, r'<input name="alias"[^>]*>')
    assert 'value="two"' in _tag(page, r'<input name="rank"[^>]*>')
    assert 'value="q_proj, v_proj"' in _tag(page, r'<input name="targets"[^>]*>')
    assert "checked" in _tag(page, r'<input type="checkbox" name="targets_only"[^>]*>')
    assert "{&#34;seed&#34;: 1}</textarea>" in page
    # The message sits in the rank's own label, right after its input.
    beside = _tag(page, r'<input name="rank"[^>]*><span class="error field-error"[^>]*>[^<]*')
    assert "rank must be a number" in beside
    assert client.get("/jobs", headers=tokens.read).json()["items"] == []


def test_a_refusal_from_the_jobs_service_keeps_the_form_too(
        client: TestClient, tokens: Tokens, seeded: Seeded) -> None:
    csrf = sign_in(client, tokens.admin)
    answer = client.post(URL, data={"csrf_token": csrf, "method": "bitdelta", "name": "x",
                                    "evaluate": "absent"})
    assert answer.status_code == 404  # an unknown data set is not a form problem: its page
    answer = client.post(URL, data={"csrf_token": csrf, "method": "lora", "name": "kept",
                                    "rank": "2", "target_error": "0.3"})
    assert answer.status_code == 422
    assert "exactly one of rank" in answer.text
    assert 'value="kept"' in _tag(answer.text, r'<input name="name"[^>]*>')


def test_text_data_sets_are_not_offered_without_a_tokenizer(
        client: TestClient, tokens: Tokens, seeded: Seeded, text_dataset: str) -> None:
    sign_in(client, tokens.admin)
    page = client.get(f"/ui/models/{FINETUNE}").text
    checkbox = _tag(page, rf'<input type="checkbox" name="evaluate" value="{text_dataset}"[^>]*>')
    assert "disabled" in checkbox
    assert "needs a tokenizer.json" in page
    assert "disabled" in _tag(page, rf'<option value="{text_dataset}"[^>]*>')


def test_both_method_fieldsets_are_served_for_pages_without_script(
        client: TestClient, tokens: Tokens, seeded: Seeded) -> None:
    sign_in(client, tokens.admin)
    page = client.get(f"/ui/models/{FINETUNE}").text
    sets = re.findall(r'<fieldset[^>]*data-method="(\w+)"[^>]*>', page)
    assert sorted(sets) == ["bitdelta", "bitdelta", "lora"]  # BitDelta, distillation, LoRA
    assert "hidden" not in "".join(re.findall(r"<fieldset[^>]*>", page))
    assert '<script src="/ui/static/compress.js" defer></script>' in page
    assert client.get("/ui/static/compress.js").status_code == 200


def test_every_page_links_a_favicon_that_is_served(client: TestClient, tokens: Tokens,
                                                   seeded: Seeded) -> None:
    signin = client.get("/ui/signin").text
    link = _tag(signin, r'<link rel="icon" href="[^"]+"[^>]*>')
    icon = client.get(link.split('"')[3])
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    legacy = client.get("/favicon.ico")
    assert legacy.status_code == 200
    assert legacy.content == icon.content
    sign_in(client, tokens.admin)
    assert link in client.get("/ui/models").text
