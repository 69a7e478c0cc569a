"""The web page in a real browser: headless Chromium (Playwright driving /usr/bin/chromium)
against uvicorn on a free loopback port. Upload a FG-NET photo, read the age back from the page.

Skips only where no Chromium is installed (``apt-get install -y chromium``) or the
Playwright package is missing. Set FACEAGE_SERVE_SCREENSHOT=path.png to also save a
screenshot of the page with the annotated photo.
"""
from __future__ import annotations

import base64
import os
import re
import shutil

import pytest

pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api")

from test_serve import FGNET, running_server, tiny_model, with_check_policy  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for cand in (os.environ.get("FACEAGE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from faceage.serve.app import create_app

    model = os.environ.get("FACEAGE_SERVE_MODEL") or with_check_policy(
        tiny_model(tmp_path_factory.mktemp("browser") / "tiny.safetensors"))
    app = create_app(model, concurrency=1)
    with running_server(app) as base:
        yield base, app
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def page(server):
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium installed (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1200, "height": 760})
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            external: list[str] = []
            pg.on("request", lambda r: external.append(r.url) if not r.url.startswith((server[0], "blob:", "data:"))
                  else None)
            pg.errors, pg.external = errors, external
            yield pg
        finally:
            browser.close()


def fgnet_photo():
    if not FGNET.is_dir():
        pytest.skip("FG-NET photos (../shared/data/fgnet) not available")
    return sorted(FGNET.glob("*.JPG"))[0]


def test_upload_fgnet_photo_shows_age(server, page):
    base, app = server
    photo = fgnet_photo()
    page.goto(f"{base}/")
    page.wait_for_function("document.getElementById('model').textContent.includes('ma_sfv2')")
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#faces li[data-age]", timeout=60_000)

    label = page.inner_text("#faces li .age")
    m = re.fullmatch(r"(\d+(?:\.\d)?) years", label.strip())
    assert m, label
    shown = float(m.group(1))
    expected = app.state.estimator.predict(photo)
    assert expected and shown == pytest.approx(expected[0].age, abs=0.05)
    assert float(page.get_attribute("#faces li", "data-age")) == pytest.approx(shown)
    assert "80% interval" in page.inner_text("#faces li")
    assert '"faces"' in page.inner_text("#json") and '"age_interval"' in page.inner_text("#json")
    assert "1 face" in page.inner_text("#status")

    # the canvas holds the photo at full size with the box drawn in green on its left edge
    w, h = page.evaluate("[document.getElementById('canvas').width, document.getElementById('canvas').height]")
    from PIL import Image

    assert (w, h) == Image.open(photo).size
    left, top, right, bottom = expected[0].box
    rgb = page.evaluate(
        "([x, y]) => Array.from(document.getElementById('canvas').getContext('2d').getImageData(x, y, 1, 1).data)",
        [left, (top + bottom) // 2])
    assert rgb[1] > 180 and rgb[0] < 100 and rgb[2] < 140, rgb  # rgb(40, 220, 90)

    shot = os.environ.get("FACEAGE_SERVE_SCREENSHOT")
    if shot:
        page.screenshot(path=shot, full_page=True)
    assert not page.errors, page.errors
    assert not page.external, page.external  # no CDN or other outside requests


def test_drop_a_photo_and_error_message(server, page):
    base, _ = server
    photo = fgnet_photo()
    page.goto(f"{base}/")
    drop = """([b64, name, type]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, { type }));
        document.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }"""
    page.evaluate(drop, [base64.b64encode(photo.read_bytes()).decode(), photo.name, "image/jpeg"])
    page.wait_for_selector("#faces li[data-age]", timeout=60_000)
    assert re.search(r"\d+\.\d years", page.inner_text("#faces li .age"))

    page.evaluate(drop, [base64.b64encode(b"this is not a photo").decode(), "notes.jpg", "image/jpeg"])
    page.wait_for_selector("#status.error", timeout=30_000)
    status = page.inner_text("#status")
    assert "Error 422" in status and "not a recognised image" in status
    assert page.locator("#faces li").count() == 0


def test_check_mode_shows_pass_or_refer(server, page):
    base, app = server
    photo = fgnet_photo()
    page.errors.clear()  # the error test before this one logs a 422 on purpose
    page.goto(f"{base}/")
    page.wait_for_function("document.getElementById('mode').options.length > 1")
    assert page.inner_text("#mode").count("age check") == len(app.state.estimator.record.age_checks)
    page.select_option("#mode", "18")
    assert page.is_visible("#check-note")
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#faces li[data-decision]", timeout=60_000)
    expected = app.state.estimator.check(photo, 18)
    shown = page.get_attribute("#faces li", "data-decision")
    assert shown == expected[0].decision
    assert ("pass: 18 or older" if shown == "pass" else "refer: check an ID") in page.inner_text("#faces li .age")
    assert f"p(18+) {expected[0].p_over:.3f}" in page.inner_text("#faces li")
    assert '"decision"' in page.inner_text("#json") and "(over 18)" in page.inner_text("#status")
    left, top, right, bottom = expected[0].box
    rgb = page.evaluate(
        "([x, y]) => Array.from(document.getElementById('canvas').getContext('2d').getImageData(x, y, 1, 1).data)",
        [left, (top + bottom) // 2])
    want = (40, 220, 90) if shown == "pass" else (235, 60, 60)  # green pass, red refer
    assert max(abs(a - b) for a, b in zip(rgb, want)) < 40, rgb
    page.select_option("#mode", "")  # back to ages: the same photo is estimated again
    page.wait_for_selector("#faces li .age:not(.decision)", timeout=60_000)
    assert re.search(r"\d+\.\d years", page.inner_text("#faces li .age"))
    assert not page.errors, page.errors


def test_api_docs_render_offline_and_links_go_where_they_say(server, page):
    """/docs (Swagger UI) and /redoc render with every request outside the server refused, as on a machine
    without network; the page's footer links lead to the API docs and a readable model page."""
    base, app = server
    page.errors.clear()
    page.external.clear()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
    try:
        page.goto(f"{base}/")
        assert page.get_attribute("footer a[href='/docs']", "href") == "/docs"
        page.click("footer a[href='/model']")
        page.wait_for_selector("table.card")
        assert page.inner_text("h1") == f"Model {app.state.summary['name']}"
        assert "non-commercial" in page.inner_text("header")
        assert page.locator("table.card th", has_text="faceage_version").count() == 1

        page.goto(f"{base}/docs")
        page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=30_000)
        paths = page.locator(".swagger-ui .opblock-summary-path").all_inner_texts()
        assert any("/v1/estimate" in p for p in paths), paths
        shot = os.environ.get("FACEAGE_DOCS_SCREENSHOT")
        if shot:
            page.screenshot(path=shot, full_page=False)

        page.goto(f"{base}/redoc")
        page.wait_for_selector("text=Estimate the ages of the faces in a photo", timeout=30_000)
        # ReDoc's bundle asks for its own footer logo from its maker's CDN; refused here, it is only not shown
        logo = [u for u in page.external if u.endswith("/logo-mini.svg")]
        assert page.external == logo and len(logo) <= 1, page.external
        # its console line for the refused logo may come before or after this point; nothing else may
        assert len(page.errors) <= len(logo) and set(page.errors) <= {"Failed to load resource: net::ERR_FAILED"}, \
            page.errors
    finally:
        page.unroute("**/*")


def test_the_empty_page_shows_no_result_area(server, page):
    """Before any photo, the result (canvas, "Faces" heading, JSON box) is hidden: `.result { display: grid }`
    once overrode the `hidden` attribute."""
    base, _ = server
    page.goto(f"{base}/")
    page.wait_for_function("document.getElementById('model').textContent.length > 0")
    assert page.evaluate("document.getElementById('result').hidden")
    assert not page.is_visible("#result") and not page.is_visible("#canvas") and not page.is_visible("#json")
