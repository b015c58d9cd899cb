"""The pages in a real browser: Playwright drives headless Chromium against a live server.

The server is `deltahub serve` in a process of its own, without embedded workers, and
jobs run in a `deltahub worker --cpu-only` process, as deployed. The test signs in,
follows the lineage to an adapter and waits for its pictures, cancels a job, starts one
from the compress form and watches the page's progress bar reach done, signs out; then
a read-only token sees no action, and forged or token-less POSTs get 403.

Chromium is Debian's `chromium` package (Playwright's own download is not needed):
`apt-get install -y chromium`, or point DELTAHUB_CHROMIUM at another build. Without
one the test skips, saying so; in CI (CI=true or DELTAHUB_REQUIRE_BROWSER=1, which
.ci/run sets) it fails instead. Screenshots of each page go to $DELTAHUB_ARTIFACTS
(default build/screenshots/).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.auth.service import create_token
from registry.infra.engines import make_engine, make_session_factory, unit_of_work
from tests.registry.api import push_dataset, register_model
from tests.registry.serverproc import ServerProcess, serve
from tests.registry.ui.conftest import BASE, DIRECT, FINETUNE, LORA, UiModels, push_adapter_dir
from tests.registry.ui.helpers import INSTALL_HINT, browser_required, chromium
from tests.registry.workerproc import WorkerPool, WorkerProcess, poll_until
from tests.s3server import free_port

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips, or fails in CI, saying how to install
    expect = None

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

# The processes run this checkout's packages, as pytest does (pythonpath = ["."]): an
# installed distribution of the same top-level name (Hugging Face's `kernels`, which
# recent transformers pull in) must not shadow ours.
CHECKOUT = str(Path(__file__).resolve().parents[3])
JOB_SECONDS = 120.0  # a tiny job is ~1 s; a worker process starting takes ~5 s of CPU
UI_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if browser_required():
            pytest.fail(f"playwright is not installed: {INSTALL_HINT}")
        pytest.skip(f"playwright is not installed: {INSTALL_HINT}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def artifacts() -> Path:
    folder = Path(os.environ.get("DELTAHUB_ARTIFACTS") or "build/screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Site:
    """The live server and worker, their tokens, and what was pushed to them."""

    def __init__(self, server: ServerProcess, worker: WorkerProcess, admin: str,
                 reader: str) -> None:
        self.server, self.worker = server, worker
        self.admin, self.reader = admin, reader
        self.api = httpx.Client(base_url=server.url, timeout=60,
                                headers={"Authorization": f"Bearer {admin}"})

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"

    def gpu_job(self) -> int:
        """A job no CPU-only worker takes: it stays queued until cancelled."""
        started = self.api.post(f"/models/{FINETUNE}/compress?method=bitdelta",
                                json={"verify": "gpu"})
        assert started.status_code == 202, started.text
        job_id: int = started.json()["id"]
        return job_id

    def job(self, job_id: int) -> dict[str, Any]:
        found: dict[str, Any] = self.api.get(f"/jobs/{job_id}").json()
        return found


def _tokens(database_url: str) -> tuple[str, str]:
    engine = make_engine(database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            return (create_token(session, "browser-admin", ["admin"]).secret,
                    create_token(session, "browser-reader", ["read"]).secret)
    finally:
        engine.dispose()


@pytest.fixture
def site(database_url: str, tmp_path: Path, ui_models: UiModels) -> Iterator[Site]:
    admin, reader = _tokens(database_url)
    # Private webhook targets: the webhooks pages' log has a delivery to a closed port.
    settings = {"DELTAHUB_EMBEDDED_WORKERS": "0", "DELTAHUB_JOB_POLL_SECONDS": "0.2",
                "DELTAHUB_WEBHOOK_ALLOW_PRIVATE": "true", "PYTHONPATH": CHECKOUT}
    with serve(database_url, tmp_path / "server", settings) as server:
        pool = WorkerPool({"DELTAHUB_DATABASE_URL": database_url,
                           "DELTAHUB_STORAGE_URL": f"file://{tmp_path / 'server' / 'blobs'}",
                           "DELTAHUB_WORK_DIR": str(tmp_path / "work"), **settings},
                          tmp_path / "workers")
        worker = pool.start("browser-worker")  # starts while the content is pushed
        site = Site(server, worker, admin, reader)
        try:
            register_model(site.api, {}, BASE, ui_models.base)  # type: ignore[arg-type]
            register_model(site.api, {}, FINETUNE, ui_models.finetune,  # type: ignore[arg-type]
                           kind="finetune", base=BASE)
            push_adapter_dir(site.api, {}, LORA, ui_models.lora,  # type: ignore[arg-type]
                             source=FINETUNE)
            push_adapter_dir(site.api, {}, DIRECT, ui_models.lora,  # type: ignore[arg-type]
                             skip=("report.json", "spectra.png"))
            _push_text_dataset(site.api, tmp_path)
            pool.wait_started([worker])
            yield site
        except BaseException:
            print(server.log_tail(), pool.log_tails())
            raise
        finally:
            site.api.close()
            pool.stop_all()


def _push_text_dataset(api: httpx.Client, folder: Path) -> None:
    """A data set to list: evaluation text in one file."""
    path = folder / "heldout.txt"
    path.write_text("def add(a, b):\n    return a + b\n" * 50)
    push_dataset(api, {}, "code-heldout", path,  # type: ignore[arg-type]
                 description="held-out Python for evaluation")


def _sign_in(page: Any, site: Site, token: str) -> None:
    page.goto(site.url("/ui"))
    assert page.url.startswith(site.url("/ui/signin"))
    page.fill("#token", token)
    page.click("#signin")
    page.wait_for_url(site.url("/ui/models"))


def _shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def test_a_user_browses_compresses_and_cancels(browser: Any, site: Site,
                                               artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.goto(site.url("/ui/signin"))
    _shot(page, artifacts, "signin")
    _sign_in(page, site, site.admin)
    _shot(page, artifacts, "models")

    page.click(f"a[href='/ui/models/{BASE}']")
    page.wait_for_url(site.url(f"/ui/models/{BASE}"))
    assert page.locator("li.finetune li.adapter").count() == 1  # the LoRA under its fine-tune
    assert page.locator("li.direct li.adapter").count() == 1
    _shot(page, artifacts, "lineage")

    pictures: list[Any] = []
    page.on("response", lambda r: pictures.append(r) if "/plots/" in r.url else None)
    page.click(f"li.finetune a.name:text('{LORA}@1')")
    page.wait_for_url("**/ui/adapters/*")
    images = page.locator("img[data-plot]")
    assert images.count() == 2
    for i in range(images.count()):
        expect(images.nth(i)).to_have_js_property("complete", True)
        assert images.nth(i).evaluate("i => i.naturalWidth") > 0  # decoded, not broken
    assert {r.url.rsplit("/", 1)[1] for r in pictures} == {"errors.svg", "spectra.svg"}
    for response in pictures:
        assert response.status == 200
        assert response.headers["content-type"] == "image/svg+xml"
    assert page.locator("#alias-form").count() == 1
    _shot(page, artifacts, "adapter")

    _cancel_a_job(page, site, artifacts)
    _compress_from_the_form(page, site, artifacts)

    page.click("nav a[href='/ui/datasets']")
    page.wait_for_url(site.url("/ui/datasets"))
    assert page.locator("text=code-heldout").count() >= 1
    _shot(page, artifacts, "datasets")

    page.click("#signout")
    page.wait_for_url(site.url("/ui/signin"))
    page.goto(site.url("/ui/jobs"))
    assert page.url.startswith(site.url("/ui/signin"))  # the session is gone
    context.close()


def _cancel_a_job(page: Any, site: Site, artifacts: Path) -> None:
    job_id = site.gpu_job()
    page.goto(site.url("/ui/jobs"))
    card = page.locator(f".job[data-job='{job_id}']")
    # A POST without the form's CSRF token is refused, even from a session with the scope.
    bare = page.request.post(site.url(f"/ui/jobs/{job_id}/cancel"), form={})
    assert bare.status == 403
    assert "CSRFFailed" in bare.text()
    assert site.job(job_id)["status"] == "queued"
    _shot(page, artifacts, "jobs")
    card.locator("button:text('Cancel')").click()
    page.wait_for_url(site.url(f"/ui/jobs/{job_id}"))
    assert page.locator("[data-field=status]").inner_text() == "cancelled"
    assert site.job(job_id)["status"] == "cancelled"


def _compress_from_the_form(page: Any, site: Site, artifacts: Path) -> None:
    page.goto(site.url(f"/ui/models/{FINETUNE}"))
    lora, bitdelta = (page.locator(f"fieldset[data-method={m}]") for m in ("lora", "bitdelta"))
    page.select_option("#method", "lora")  # only the chosen method's settings show
    expect(lora).to_be_visible()
    expect(bitdelta.first).to_be_hidden()
    page.select_option("#method", "bitdelta")
    expect(lora).to_be_hidden()
    expect(bitdelta.first).to_be_visible()
    page.fill("input[name=name]", "from-the-browser")
    _shot(page, artifacts, "finetune")
    site.worker.pause()  # so the page surely opens before the job ends
    try:
        page.click("#compress")
        page.wait_for_url("**/ui/jobs/*")
        status = page.locator("[data-field=status]")
        assert status.inner_text() in ("queued", "running")
        assert float(page.locator("progress").get_attribute("value")) < 1
        assert page.locator("[data-field=finished]").inner_text() == "–"
    finally:
        site.worker.resume()
    # Only the page's polling can bring the bar to the end now.
    expect(page.locator("[data-field=status]")).to_have_text("succeeded",
                                                             timeout=JOB_SECONDS * 1000)
    expect(page.locator("progress")).to_have_js_property("value", 1)
    assert page.locator("[data-field=percent]").inner_text() == "100.0 %"
    assert page.locator("[data-field=result] a").count() == 1
    assert page.locator("[data-field=cancel]").count() == 0
    # The facts beside the card moved too, to what a reload shows.
    expect(page.locator("[data-field=finished]")).not_to_have_text("–")
    live = {f: page.locator(f"[data-field={f}]").inner_text()
            for f in ("attempt", "started", "finished", "result")}
    assert live["result"] == "made from-the-browser@1"
    page.reload()
    assert live == {f: page.locator(f"[data-field={f}]").inner_text()
                    for f in ("attempt", "started", "finished", "result")}
    assert live["attempt"].startswith("1 of ")
    _shot(page, artifacts, "job")


def test_a_read_only_token_sees_no_actions(browser: Any, site: Site) -> None:
    job_id = site.gpu_job()
    context = browser.new_context()
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    _sign_in(page, site, site.reader)
    adapter_id = site.api.get(f"/adapters/{LORA}").json()["id"]
    page.goto(site.url(f"/ui/adapters/{adapter_id}"))
    assert page.locator("#alias-form, #delete-form").count() == 0
    page.goto(site.url(f"/ui/models/{FINETUNE}"))
    assert page.locator("#compress-form").count() == 0
    page.goto(site.url("/ui/jobs"))
    assert page.locator(f".job[data-job='{job_id}']").count() == 1
    assert page.locator("form.cancel").count() == 0
    # A forged cancel with this session's own CSRF token: the scope is still missing.
    csrf = page.locator("form.who input[name=csrf_token]").get_attribute("value")
    forged = page.request.post(site.url(f"/ui/jobs/{job_id}/cancel"),
                               form={"csrf_token": csrf})
    assert forged.status == 403
    assert "compress" in forged.text()
    poll_until(lambda: site.job(job_id)["status"] == "queued", 1, "the job to stay queued")
    context.close()


def _failing_webhook(site: Site) -> int:
    """A webhook with a long URL on a closed port, and its test delivery attempted."""
    made = site.api.post("/webhooks", json={
        "url": f"http://127.0.0.1:{free_port()}/hooks/a-rather-long-path-that-must-wrap",
        "events": ["adapter.registered", "alias.set", "alias.removed", "job.failed"]})
    assert made.status_code == 201, made.text
    hook_id: int = made.json()["id"]
    assert site.api.post(f"/webhooks/{hook_id}/test").status_code in (200, 201, 202)
    poll_until(lambda: bool(site.api.get(f"/webhooks/{hook_id}/deliveries").json()["items"]),
               30, "the test delivery to be attempted")
    return hook_id


WIDTHS = (1280, 390)  # a desktop, and a phone (iPhone 12–15 CSS pixels)
FITS = """() => ({width: document.documentElement.scrollWidth, viewport: window.innerWidth,
                 height: document.documentElement.scrollHeight})"""
# Pages of one small adapter or job, in words and tables (issue 27: 5,000–8,000 px when
# they dumped documents); at a phone's width text wraps, so taller.
MAX_HEIGHT = {1280: 5000, 390: 9000}
PICTURES = """imgs => imgs.map(i => ({src: i.currentSrc, complete: i.complete,
    natural: i.naturalWidth, shown: i.getBoundingClientRect().width}))"""


def _plots_readable(page: Any, width: int) -> list[str]:
    """Each plot is SVG shown at no less than its own size (its labels as drawn)."""
    images = page.locator("img[data-plot]")
    for i in range(images.count()):
        images.nth(i).scroll_into_view_if_needed()  # they load lazily
        expect(images.nth(i)).to_have_js_property("complete", True)
    page.evaluate("window.scrollTo(0, 0)")
    problems = []
    for found in images.evaluate_all(PICTURES):
        if not found["src"].endswith(".svg") or found["natural"] <= 0:
            problems.append(f"at {width} px: {found['src']} is not a drawn SVG ({found})")
        elif found["shown"] + 0.5 < found["natural"]:
            problems.append(f"at {width} px: {found['src']} is shrunk to {found['shown']} px "
                            f"of {found['natural']}")
    return problems


def _fits(page: Any, width: int, route: str, signed_in: bool, artifacts: Path) -> list[str]:
    """What is wrong with `route` at `width`: a page wider than the window or too tall, a
    plot shrunk below its size, a hidden Sign out. Prints the page's size, and shoots it
    (`<route>-<width>.png`, the README's gallery)."""
    page.goto(route)
    problems = _plots_readable(page, width)  # once loaded: the page's height is final
    measured = page.evaluate(FITS)
    path = route.split("/ui/", 1)[1]
    print(f"width {width}: /ui/{path} is {measured['width']} × {measured['height']} px")
    if measured["width"] > measured["viewport"]:
        problems.append(f"{route} at {width} px is {measured['width']} px wide")
    if measured["height"] > MAX_HEIGHT[width]:
        problems.append(f"{route} at {width} px is {measured['height']} px tall")
    _shot(page, artifacts, f"{path.replace('/', '-')}-{width}")  # the plots loaded
    if signed_in:
        signout = page.locator("#signout")
        box = signout.bounding_box()
        if not signout.is_visible() or box is None or box["x"] < 0 or \
                box["x"] + box["width"] > measured["viewport"]:
            problems.append(f"{route} at {width} px: Sign out is not in view ({box})")
    return problems


def test_every_page_fits_a_desktop_and_a_phone(browser: Any, site: Site,
                                               artifacts: Path) -> None:
    job_id = site.gpu_job()
    adapter_id = site.api.get(f"/adapters/{LORA}").json()["id"]
    hook_id = _failing_webhook(site)
    routes = ["/ui/models", f"/ui/models/{BASE}", f"/ui/models/{FINETUNE}",
              f"/ui/adapters/{adapter_id}", "/ui/datasets", "/ui/jobs", f"/ui/jobs/{job_id}",
              "/ui/webhooks", f"/ui/webhooks/{hook_id}",
              "/ui/adapters/999999"]  # the last is the error page (404)
    context = browser.new_context(viewport={"width": WIDTHS[0], "height": 800})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    # Nothing a page loads (style, script, favicon, plot) fails; only the 404 page is one.
    page.on("response", lambda r: problems.append(f"{r.url}: {r.status}")
            if r.status >= 400 and not r.url.endswith("/999999") else None)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        problems += _fits(page, width, site.url("/ui/signin"), signed_in=False, artifacts=artifacts)
    _sign_in(page, site, site.admin)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        for route in routes:
            problems += _fits(page, width, site.url(route), signed_in=True, artifacts=artifacts)
    assert page.locator("h1").inner_text().startswith("404")
    context.close()
    assert not problems, "\n".join(problems)
