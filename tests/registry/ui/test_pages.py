"""The pages: base models, a base's lineage, an adapter, a fine-tune's compress form, jobs."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from registry.jobs.worker import Worker
from registry.settings import Settings
from tests.conftest import Tokens
from tests.registry.ui.conftest import (
    BASE,
    DIRECT,
    FINETUNE,
    LORA,
    Seeded,
    UiModels,
    push_adapter_dir,
    sign_in,
)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
PAGE_SIZE = 2


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"DEFAULT_PAGE_SIZE": PAGE_SIZE})


def _adapter_links(html: str) -> list[str]:
    return re.findall(r'<a class="name" href="/ui/adapters/\d+">([^<]+)</a>', html)


def test_base_models_show_counts_size_and_parameters(client: TestClient, tokens: Tokens,
                                                     seeded: Seeded) -> None:
    sign_in(client, tokens.read)
    html = client.get("/ui/models").text
    row = re.search(r"<tr>\s*<td><a href=\"/ui/models/tiny-base\">tiny-base</a></td>"
                    r"\s*<td>(\d+)</td>\s*<td>(\d+)</td>\s*<td>([^<]+)</td>\s*<td>([^<]+)</td>",
                    html)
    assert row is not None, html
    assert row.groups()[:2] == ("1", "2")  # one fine-tune; two adapters on the base
    assert row.group(3).endswith("kB")
    assert row.group(4) == "57.84 k"  # the tiny Llama's parameters
    assert FINETUNE not in html  # fine-tunes are not base models


def test_lineage_groups_adapters_under_their_fine_tune(client: TestClient, tokens: Tokens,
                                                       seeded: Seeded) -> None:
    sign_in(client, tokens.read)
    html = client.get(f"/ui/models/{BASE}").text
    finetune_at = html.index(f'href="/ui/models/{FINETUNE}"')
    direct_at = html.index("pushed directly")
    lora_at = html.index(f">{LORA}@1<")
    assert finetune_at < lora_at < direct_at < html.index(f">{DIRECT}@1<")
    assert "latest" in html
    assert "× smaller" in html
    assert "weight error ≤" in html  # the pushed report's headline error
    # Issue 27: a LoRA states both weight errors, each under its one name, not its
    # delta-relative error as "weight error".
    assert 'data-error="delta_rel_error"' in html
    assert 'data-error="weight_rel_error"' in html


def test_lineage_filters_by_kind_and_alias_and_pages(client: TestClient, tokens: Tokens,
                                                     seeded: Seeded, ui_models: UiModels) -> None:
    push_adapter_dir(client, tokens.push, "third", ui_models.lora, skip=("spectra.png",))
    client.put(f"/adapters/{DIRECT}@1/aliases/prod", headers=tokens.push)
    sign_in(client, tokens.read)
    first = client.get(f"/ui/models/{BASE}").text
    assert _adapter_links(first) == ["third@1", "direct-lora@1"]  # newest first, 2 a page
    more = re.search(r'<a rel="next" href="\?([^"]+)">', first)
    assert more is not None
    second = client.get(f"/ui/models/{BASE}?{more.group(1).replace('&amp;', '&')}").text
    assert _adapter_links(second) == [f"{LORA}@1"]
    assert 'rel="next"' not in second
    assert _adapter_links(client.get(f"/ui/models/{BASE}?alias=prod").text) == [
        "direct-lora@1"]
    assert _adapter_links(client.get(f"/ui/models/{BASE}?kind=bitdelta").text) == []
    assert client.get(f"/ui/models/{BASE}?alias=no%20such").status_code == 422


def test_adapter_page_shows_files_plots_and_usage(client: TestClient, tokens: Tokens,
                                                  seeded: Seeded) -> None:
    sign_in(client, tokens.read)
    adapter_id = seeded.lora["id"]
    html = client.get(f"/ui/adapters/{adapter_id}").text
    for f in seeded.lora["files"]:
        assert f["filename"] in html
        assert f["sha256"] in html
    plots = re.findall(rf'src="/ui/adapters/{adapter_id}/plots/(\w+)\.svg"', html)
    assert plots == ["errors", "spectra"]
    assert f"deltahub pull {LORA}@1 -o ./{LORA}-v1" in html
    # extract-lora keeps changed norms through modules_to_save, which vLLM does not load:
    # the page offers the merge instead of a vLLM command that would fail (issue 28).
    assert "--lora-modules" not in html
    assert "merge_and_unload()" in html
    assert "PeftModel.from_pretrained" in html
    # Read-only: no action forms.
    assert 'id="alias-form"' not in html
    assert 'id="delete-form"' not in html
    # Without a report there is nothing to draw, and the page says so.
    bare = client.get(f"/ui/adapters/{seeded.direct['id']}").text
    assert "/plots/" not in bare
    assert "No per-layer data" in bare


def test_plots_are_svg_cached_by_content(app: FastAPI, client: TestClient, tokens: Tokens,
                                         seeded: Seeded) -> None:
    sign_in(client, tokens.read)
    url = f"/ui/adapters/{seeded.lora['id']}/plots/spectra.svg"
    first = client.get(url)
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/svg+xml"
    assert first.content.startswith(b"<?xml")
    cache = app.state.plot_cache
    misses = cache.misses
    again = client.get(url)
    assert again.content == first.content
    assert cache.misses == misses
    assert cache.hits >= 1
    etag = first.headers["etag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(f"/ui/adapters/{seeded.direct['id']}/plots/spectra.svg").status_code == 404
    assert client.get(f"/ui/adapters/{seeded.lora['id']}/plots/nope.svg").status_code == 404
    client.cookies.clear()
    assert client.get(url, follow_redirects=False).status_code == 303  # pictures need read


def test_compress_form_starts_a_job_that_the_jobs_page_shows(
        app: FastAPI, client: TestClient, tokens: Tokens, seeded: Seeded) -> None:
    csrf = sign_in(client, tokens.admin)
    page = client.get(f"/ui/models/{FINETUNE}").text
    assert 'id="compress-form"' in page
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    assert key is not None
    form = {"csrf_token": csrf, "method": "lora", "rank": "2", "name": "from-ui",
            "idempotency_key": key.group(1)}
    started = client.post(f"/ui/models/{FINETUNE}/compress", data=form, follow_redirects=False)
    assert started.status_code == 303
    job_url = started.headers["location"]
    job_id = int(job_url.rsplit("/", 1)[1])
    # The same form sent twice (a double click) is one job.
    twice = client.post(f"/ui/models/{FINETUNE}/compress", data=form, follow_redirects=False)
    assert twice.headers["location"] == job_url
    job = client.get(f"/jobs/{job_id}", headers=tokens.read).json()
    assert (job["method"], job["adapter_name"], job["params"]["rank"]) == ("lora", "from-ui", 2)
    assert f"/ui/jobs/{job_id}/cancel" in client.get(job_url).text
    worker = Worker(app.state.database, app.state.store, app.state.settings, name="ui-test",
                    capabilities=set())
    assert worker.run_once()
    polled = client.get(f"/ui/jobs/progress?ids={job_id},999").json()["jobs"]
    assert len(polled) == 1
    assert polled[0]["status"] == "succeeded"
    assert polled[0]["fraction"] == 1.0
    assert polled[0]["finished"]
    assert polled[0]["adapter"] is not None
    listing = client.get("/ui/jobs?status=succeeded").text
    assert f'data-job="{job_id}"' in listing
    assert "from-ui@1" in listing


def test_bad_compress_forms_say_what_is_wrong(client: TestClient, tokens: Tokens,
                                              seeded: Seeded) -> None:
    csrf = sign_in(client, tokens.admin)
    url = f"/ui/models/{FINETUNE}/compress"
    cases = [({"method": "lora"}, "exactly one of rank"),
             ({"method": "lora", "rank": "two"}, "rank must be a number"),
             ({"method": "bitdelta", "advanced": "[1]"}, "must be a JSON object"),
             ({"method": "bitdelta", "advanced": '{"bogus": 1}'}, "bogus"),
             ({"method": "zip"}, "unknown method")]
    for fields, message in cases:
        answer = client.post(url, data={"csrf_token": csrf, **fields})
        assert answer.status_code in (400, 422), (fields, answer.status_code)
        assert message in answer.text, (fields, answer.text[-600:])
    assert client.get("/jobs", headers=tokens.read).json()["items"] == []
    base_page = client.post(f"/ui/models/{BASE}/compress",
                            data={"csrf_token": csrf, "method": "bitdelta"})
    assert base_page.status_code == 422
    assert "NotAFinetune" in base_page.text


def test_cancel_alias_and_delete_from_the_pages(client: TestClient, tokens: Tokens,
                                                seeded: Seeded) -> None:
    queued = client.post(f"/models/{FINETUNE}/compress?method=bitdelta",
                         headers=tokens.compress).json()
    csrf = sign_in(client, tokens.admin)
    done = client.post(f"/ui/jobs/{queued['id']}/cancel", data={"csrf_token": csrf})
    assert done.status_code == 200
    assert client.get(f"/jobs/{queued['id']}", headers=tokens.read).json()["status"] == (
        "cancelled")
    assert f"/ui/jobs/{queued['id']}/cancel" not in done.text  # nothing left to cancel
    adapter_id = seeded.direct["id"]
    moved = client.post(f"/ui/adapters/{adapter_id}/aliases",
                        data={"csrf_token": csrf, "alias": "prod"})
    assert moved.status_code == 200
    assert "prod" in client.get(f"/adapters/{adapter_id}", headers=tokens.read).json()["aliases"]
    gone = client.post(f"/ui/adapters/{adapter_id}/delete", data={"csrf_token": csrf},
                       follow_redirects=False)
    assert gone.headers["location"] == f"/ui/models/{BASE}"
    assert client.get(f"/adapters/{adapter_id}", headers=tokens.read).status_code == 404
