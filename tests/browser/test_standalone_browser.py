"""A real browser on the standalone app: Debian's Chromium, headless, driven by Playwright.

Starts `python -m tlok_workflow ui` on 127.0.0.1 with the demo models (where diffusers is installed: the gradio
4.40 venv) or the same app on the fake backend (the gradio 3.41 venv, the WebUI's gradio), picks an outfit (the
hairstyle follows), clicks Generate and waits until the gallery shows every stage; saves screenshots before and
after (copied to $TLOK_SCREENSHOT_DIR when set). Needs playwright, /usr/bin/chromium and gradio.
"""
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
DEMO = importlib.util.find_spec("diffusers") is not None
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    log = open(tmp_path / "app.log", "w")
    command = ["-m", "tlok_workflow", "ui", "--out", str(tmp_path / "out"), "--port", str(port)] if DEMO else \
        [str(Path(__file__).with_name("fake_app.py")), str(tmp_path / "out"), str(port)]
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline:
        if "TLOK Workflow: http" in (tmp_path / "app.log").read_text():
            break
        assert process.poll() is None, (tmp_path / "app.log").read_text()
        time.sleep(0.3)
    yield url, tmp_path / "out"
    process.terminate()
    process.wait(timeout=20)
    log.close()


def test_choose_outfit_generate_and_see_every_stage(app_url, tmp_path):
    url, out = app_url
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(url)
        page.wait_for_selector("#tlok_workflow_generate")
        page.click("#tlok_workflow_outfit input")
        # the list shows each outfit with the pack's description (gradio 3, 4; 5+ lists in a listbox)
        page.locator('ul.options li, [role="listbox"] li', has_text="runa — Earth Kingdom runaway").first.click()
        hairstyle = page.locator("#tlok_workflow_hairstyle input")
        prompt = page.locator("#tlok_workflow_prompt textarea")
        sync_api.expect(hairstyle).to_have_value("shoa — Season 4 short hair", timeout=15000)   # the outfit's pair
        sync_api.expect(prompt).to_have_value("full-shot Korra wearing runa outfit shoa hairstyle tlok artstyle",
                                              timeout=15000)
        # every change event settles: the lint matches the final prompt
        sync_api.expect(page.locator("#tlok_workflow_warnings").first).not_to_contain_text("costs likeness",
                                                                                        timeout=15000)
        page.screenshot(path=str(tmp_path / "before.png"), full_page=True)
        page.click("#tlok_workflow_generate")
        # the face stage finds no face in the demo's noise, so four stages make images and the log says why
        page.wait_for_function("document.querySelectorAll('#tlok_workflow_gallery img').length >= 4",
                               timeout=240000)
        sync_api.expect(page.locator("#html_log_tlok_workflow").first).to_contain_text("4 stage image(s) saved",
                                                                                 timeout=30000)
        captions = page.locator("#tlok_workflow_gallery").inner_text()
        for caption in ("s1 base", "s2 style", "s3 1024", "s4 1536"):
            assert caption in captions
        page.wait_for_function("Array.from(document.querySelectorAll('#tlok_workflow_gallery img'))"
                               ".every(img => img.complete && img.naturalWidth > 0)", timeout=30000)
        page.screenshot(path=str(tmp_path / "after.png"), full_page=True)
        browser.close()
    if os.environ.get("TLOK_SCREENSHOT_DIR"):   # to look at what a user sees
        for name in ("before.png", "after.png"):
            shutil.copy(tmp_path / name, Path(os.environ["TLOK_SCREENSHOT_DIR"]) / f"tlok_panel_{name}")
    saved = sorted(p.name for p in out.glob("*.png"))
    assert len(saved) == 4 and saved[0].endswith("-s1-base.png")
    assert "wearing runa outfit shoa hairstyle" in (out / saved[-1]).read_bytes().decode("latin-1")


def test_panel_words_the_import_error_by_its_button_and_the_stage_table_rows(app_url):
    url, _ = app_url
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 700})   # the stage table starts below the fold
        page.goto(url)
        page.wait_for_selector("#tlok_workflow_generate")
        page.wait_for_timeout(1500)   # as a person would: gradio runs the page's load script after the first paint
        negatives = page.locator("#tlok_workflow_negatives")
        sync_api.expect(negatives).to_contain_text("blur, vignette, instagram")   # the words, not the key "card"
        assert "card" not in negatives.inner_text()
        # open the Stages accordion as a click would, without scrolling to it: every stage's row is drawn
        page.evaluate("document.querySelector('#tlok_workflow_stages_accordion .label-wrap').click()")
        rows = ("Array.from(document.querySelectorAll('#tlok_workflow_stages tbody tr, #tlok_workflow_stages "
                ".virtual-row')).filter(r => r.getBoundingClientRect().height > 0 && /img2img|txt2img|face/"
                ".test(r.textContent)).length")
        # base, style, 1024, 1536, face (gradio 4 adds a sizing row)
        page.wait_for_function(f"{rows} >= 5", timeout=15000)
        # a bad recipe: the error shows by the Import button, not 1,300 px above it
        page.evaluate("document.querySelector('#tlok_workflow_recipe_accordion .label-wrap').click()")
        page.locator("#tlok_workflow_recipe_json textarea").fill('{"stages": "nope"}')
        page.click("#tlok_workflow_import")
        status = page.locator("#tlok_workflow_recipe_status")
        sync_api.expect(status.first).to_contain_text("Error", timeout=15000)
        gap = status.first.bounding_box()["y"] - page.locator("#tlok_workflow_import").bounding_box()["y"]
        assert 0 < gap < 150, gap
        browser.close()
