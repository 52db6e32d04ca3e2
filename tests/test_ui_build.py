"""The shared panel (ui.py) in the standalone host: it builds, and its values → recipe logic is right.

Needs gradio: runs in the gradio 3.41 and 4.40 venvs of .ci/run_ui.sh.
"""
import json

import pytest

gr = pytest.importorskip("gradio")

from fakes import FakeBackend  # noqa: E402
from panel_events import labels, wired  # noqa: E402
from tlok_workflow import ui  # noqa: E402
from tlok_workflow.app import build_app, make_host  # noqa: E402
from tlok_workflow.presets import load_pack  # noqa: E402
from tlok_workflow.recipe import PromptSpec  # noqa: E402

PACK = load_pack()


@pytest.fixture
def panel(tmp_path):
    host = make_host(tmp_path, backend_factory=FakeBackend)
    with gr.Blocks():
        return ui.build_panel(host)


def values(panel, **changes):
    v = {name: getattr(component, "value", None) for name, component in panel.controls.items()}
    v.update(changes)
    return v


def test_standalone_app_builds_with_the_webui_element_ids(tmp_path):
    demo = build_app(make_host(tmp_path, backend_factory=FakeBackend))
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"tab_tlok_workflow", "tlok_workflow_generate", "tlok_workflow_interrupt", "tlok_workflow_skip",
            "tlok_workflow_gallery", "tlok_workflow_stages", "tlok_workflow_plan"} <= ids


def test_generate_streams_progress_then_all_stages(panel):
    v = values(panel, face_after="off", seed=3)
    updates = list(panel.host.run_streaming(panel, tuple(v.values())))
    gallery, info, infotext, log = updates[-1]
    assert [caption for _, caption in gallery] == ["s1 base 64×64", "s2 style 64×64", "s3 1024 128×128",
                                                   "s4 1536 192×192"]
    assert "4 stage image(s) saved" in log and "TLOK stage: 4/4 1536" in infotext
    assert all("tlok-progress" in u[3] for u in updates[:-1])


def test_interrupt_keeps_the_finished_stages(panel):
    def press_interrupt(request):   # pressed while the 1024 pass finishes: the next pass does not start
        if request.width == 128:
            panel.host.session.cancel()

    panel.host.session._backend = FakeBackend(on_generate=press_interrupt)
    v = values(panel, face_after="off", seed=3)
    *_, (gallery, _, _, log) = panel.host.run_streaming(panel, tuple(v.values()))
    assert [caption for _, caption in gallery] == ["s1 base 64×64", "s2 style 64×64", "s3 1024 128×128"]
    assert log.startswith("<p>Interrupted")


def test_batch_section_runs_a_folder_and_reports(panel, tmp_path):
    from PIL import Image

    source = tmp_path / "photos"
    source.mkdir()
    for i in range(2):
        Image.new("RGB", (48, 32), (0, 80 * i, 0)).save(source / f"p{i}.jpg")
    folders = {"batch_input": str(source), "batch_output": str(tmp_path / "styled"), "batch_recursive": False,
               "batch_final_only": True, "batch_prompt_from_infotext": False}
    args = tuple(values(panel).values()) + tuple(folders[name] for name in panel.batch_controls)
    *_, (gallery, _, _, log) = panel.host.batch_streaming(panel, args)
    assert "2 done" in log and "1 model load" in log
    assert sorted(p.name for p in (tmp_path / "styled").glob("*.png")) == ["p0.png", "p1.png"]   # finals only
    assert [caption for _, caption in gallery] == ["p0", "p1"]
    args = tuple(values(panel).values()) + ("", "", False, False, False)
    *_, (_, _, _, log) = panel.host.batch_streaming(panel, args)
    assert "give an input folder and an output folder" in log


def test_an_output_folder_that_is_a_file_is_an_error_before_any_pass(tmp_path):
    from PIL import Image

    out = tmp_path / "outputs"
    out.write_text("a file")
    backend = FakeBackend()
    host = make_host(out, backend_factory=lambda: backend)
    with gr.Blocks():
        panel = ui.build_panel(host)
    for start in (None, Image.new("RGB", (64, 64))):   # Generate without and with an uploaded start image
        *_, (gallery, _, _, log) = panel.host.run_streaming(panel, tuple(values(panel, init_image=start).values()))
        assert gallery == [] and backend.requests == []
        assert log in (f"<p class='tlok-error'>Error: {out}: not a folder; the output of a run is a folder</p>",
                       f"<p class='tlok-error'>Error: {out / 'inputs'}: cannot be made, {out} is a file</p>")
    assert out.read_text() == "a file"


def test_the_panel_takes_bounds_and_hints_from_the_recipe_schema(tmp_path, monkeypatch):
    import dataclasses
    import html
    import json
    import re
    import types

    weight = next(f for f in dataclasses.fields(PromptSpec) if f.name == "outfit_weight")
    monkeypatch.setattr(weight, "metadata", types.MappingProxyType(dict(weight.metadata, le=3.5)))
    with gr.Blocks() as blocks:
        panel = ui.build_panel(make_host(tmp_path, backend_factory=FakeBackend))
    assert panel.outfit_weight.maximum == 3.5 and panel.outfit_weight.minimum == weight.metadata["ge"]
    [holder] = [b.value for b in blocks.blocks.values() if "tlok_workflow_hints" in str(getattr(b, "value", ""))]
    hints = json.loads(html.unescape(re.search(r"data-hints='([^']*)'", holder).group(1)))
    assert hints["tlok_workflow_outfit_weight"] == weight.metadata["doc"]
    assert hints["tlok_workflow_seed"].startswith("seed of the first item")
    assert hints["tlok_workflow_ladder"].startswith("auto follows the shot")


def test_the_ui_command_starts_without_warnings_and_serves_our_stylesheet(tmp_path):
    """`python -m tlok_workflow ui` as a user starts it: no DeprecationWarning or UserWarning about our gradio
    calls on its console (gradio 6 moved css to launch() and renamed col_count), and the page has style.css."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONWARNINGS="always::DeprecationWarning,always::UserWarning")
    process = subprocess.Popen([sys.executable, "-m", "tlok_workflow", "ui", "--port", str(port), "--out",
                                str(tmp_path / "out")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.time() + 120
        while time.time() < deadline and not any("TLOK Workflow: http" in line for line in lines):
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
        page = "".join(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30).read().decode()
                       for path in ("/", "/config"))
    finally:
        process.terminate()
        process.wait(timeout=30)
    ours = [line for line in lines if "Warning" in line and any(word in line for word in (
        "css", "col_count", "column_count", "column_limits", "tlok_workflow"))]
    assert ours == [], "".join(lines)
    assert "tlok-plan" in page   # a rule of style.css, in the page or its config


def test_the_panel_says_what_each_choice_is_in_the_packs_words(tmp_path):
    with gr.Blocks() as blocks:
        panel = ui.build_panel(make_host(tmp_path, backend_factory=FakeBackend))
    assert "defa — Default outfit" in labels(panel.outfit) and "runa — Earth Kingdom runaway" in labels(panel.outfit)
    assert "stada — Default ponytail hair" in labels(panel.hairstyle)
    assert labels(panel.negatives) == ["blur, vignette, instagram", "photo, tlok artstyle", "white skin",
                                       "tlok artstyle"]   # the words each preset adds, not its key ("card")
    # a choice picked in the list makes the recipe of its key, in either gradio's way of listing it
    runa = next(c for c in panel.outfit.choices if "runa" in str(c))
    picked = runa[1] if isinstance(runa, (tuple, list)) else runa
    choose_outfit = wired(blocks, panel.outfit, "input")
    hairstyle, prompt, *_ = choose_outfit(*values(panel, outfit=picked).values())
    assert ui.shown_key(hairstyle) == "shoa" and "wearing runa outfit shoa hairstyle" in prompt
    label_of = {getattr(b, "elem_id", None): getattr(b, "label", None) for b in blocks.blocks.values()}
    assert list(label_of.values()).count("Recipe") == 0
    assert label_of["tlok_workflow_preset"] == "Sampler recipe"
    assert label_of["tlok_workflow_recipe_json"] == "Recipe JSON"


def test_a_recipe_import_error_shows_beside_the_import_button(tmp_path):
    with gr.Blocks() as blocks:
        ui.build_panel(make_host(tmp_path, backend_factory=FakeBackend))
    [import_button] = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "tlok_workflow_import"]
    *controls, status = wired(blocks, import_button, "click")('{"stages": "nope"}')
    assert "tlok-error" in status and "stages" in status
    assert wired(blocks, import_button, "click", outputs=True)[-1].elem_id == "tlok_workflow_recipe_status"


def compare_values(panel, **changes):
    k = {name: getattr(component, "value", None) for name, component in panel.compare_controls.items()}
    k.update(changes)
    return k


def test_compare_section_shows_the_grid_then_each_cell(panel):
    v = values(panel, face_after="off", seed=3)
    k = compare_values(panel, compare_x_path="stages.1536.cfg_scale", compare_x_values="7, 4")
    *_, (gallery, info, _, log) = panel.host.compare_streaming(panel, tuple(v.values()) + tuple(k.values()))
    assert [caption for _, caption in gallery] == ["00000-3-grid", "cell 1: stages.1536.cfg_scale=7",
                                                   "cell 2: stages.1536.cfg_scale=4"]
    assert "2 cell(s): 5 pass(es) run, 3 reused (8 if every cell ran from scratch)" in log
    infotexts = json.loads(info)["infotexts"]
    assert infotexts[0] == "" and "CFG scale: 4.0" in infotexts[2] and "TLOK stage: 4/4 1536" in infotexts[2]
    k = compare_values(panel, compare_x_path="stages.1536.cfg_scale", compare_x_values="7, 40")
    *_, (gallery, _, _, log) = panel.host.compare_streaming(panel, tuple(v.values()) + tuple(k.values()))
    assert gallery == [] and "stages.1536.cfg_scale: 40.0 is out of range 1.0..30.0" in log


def test_generate_reuses_unchanged_stages_unless_told_not_to(panel):
    v = values(panel, face_after="off", seed=3)
    list(panel.host.run_streaming(panel, tuple(v.values())))
    assert "s1–s4 reused from 00000-3" in panel.model.plan_or_error(v)   # the plan says it before the run
    *_, (gallery, _, _, log) = panel.host.run_streaming(panel, tuple(v.values()))
    assert len(gallery) == 4 and "00001-3: s1–s4 reused from 00000-3; 0 passes run" in log
    v = values(panel, face_after="off", seed=3, reuse=False)
    assert "reused" not in panel.model.plan_or_error(v)
    *_, (gallery, _, _, log) = panel.host.run_streaming(panel, tuple(v.values()))
    assert len(gallery) == 4 and "reused" not in log
