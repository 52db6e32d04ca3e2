"""The tab inside the WebUI stand-in: registration, settings, Send-to, Generate through the queue, paste, API.

Needs gradio: runs in the gradio 3.41 (A1111) and 4.40 (Forge) venvs of .ci/run_ui.sh.
"""
import html
import importlib.util
import json
import sys
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from panel_events import wired  # noqa: E402
from tlok_workflow.stage_table import rows as stage_rows  # noqa: E402
from tlok_workflow.request import StageSettings, apply_settings  # noqa: E402
from webui_stub.env import BASE, STYLE, title  # noqa: E402
pytest_plugins = ["webui_stub.env"]   # the `webui` fixture

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    """As modules/script_loading.load_module: the file runs under its basename, not put in sys.modules."""
    path = ROOT / "scripts" / "tlok_workflow.py"
    spec = importlib.util.spec_from_file_location(path.name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_webui(webui):
    """What create_ui does, in order: settings, the txt2img output panel, extension tabs."""
    cb, ui_common = webui.script_callbacks, webui.ui_common
    script = load_script()
    cb.ui_settings_callback()
    with gr.Blocks() as txt2img:
        for elem_id in ("txt2img_prompt", "txt2img_neg_prompt"):
            cb.after_component_callback(gr.Textbox(elem_id=elem_id), elem_id=elem_id)
        panel = ui_common.create_output_panel("txt2img", "outputs")
        cb.after_component_callback(panel.gallery, elem_id="txt2img_gallery")
        with gr.Row():
            cb.after_component_callback(gr.Button(elem_id="txt2img_send_to_extras"), elem_id="txt2img_send_to_extras")
    tabs = cb.ui_tabs_callback()
    assert cb.reported == []
    for core_tab in ("txt2img", "img2img", "inpaint", "extras"):   # the core's own targets, built by create_ui
        webui.infotext_utils.paste_fields.setdefault(core_tab, {"init_img": None, "fields": [],
                                                                "override_settings_component": None})
    webui.infotext_utils.connect_paste_params_buttons()   # what create_ui does next; raises on a missing target
    return tabs, script.extension.host, txt2img


def elem_ids(blocks):
    return {getattr(b, "elem_id", None) for b in blocks.blocks.values()}


def test_tab_settings_and_send_to_register(webui):
    tabs, host, _ = build_webui(webui)
    [(blocks, label, elem_id)] = tabs
    assert (label, elem_id) == ("TLOK Workflow", "tlok_workflow")
    ids = elem_ids(blocks)
    for suffix in ("generate", "interrupt", "skip", "interrupting", "gallery", "results", "outfit", "hairstyle",
                   "base", "style", "refresh_checkpoints", "paste", "task_id"):
        assert f"tlok_workflow_{suffix}" in ids
    assert {"html_info_tlok_workflow", "generation_info_tlok_workflow", "tlok_workflow_send_to_img2img"} <= ids
    # the yolo detector looks where ADetailer keeps face models
    assert host.session.yolo_folder == str(Path(webui.paths_internal.models_path) / "adetailer")
    options = webui.shared.opts.data_labels
    assert options["tlok_workflow_style_checkpoint"].section == ("tlok_workflow", "TLOK Workflow")
    assert options["tlok_workflow_style_checkpoint"].component_args()["choices"] == ["", title(STYLE), title(BASE)]
    assert {"tlok_workflow_presets_dir", "tlok_workflow_outdir", "tlok_workflow_save_intermediates",
            "tlok_workflow_face_detectors", "tlok_workflow_base_checkpoint"} <= set(options)
    # every binding aimed at our tab has a registered target (else connect_paste_params_buttons raises KeyError)
    utils = webui.infotext_utils
    ours = [b for b in utils.registered_param_bindings if b.tabname == "tlok_workflow"]
    assert {b.paste_button.elem_id for b in ours} == {"txt2img_send_to_tlok_workflow", "tlok_workflow_paste"}
    assert utils.paste_fields["tlok_workflow"]["init_img"] is host.panel.init_image
    assert [b for b in ours if b.source_image_component is not None][0].source_image_component.elem_id == \
        "txt2img_gallery"


def test_reloading_scripts_registers_once_more_not_twice(webui):
    load_script()
    webui.script_callbacks.clear_callbacks()   # what "Reload UI" does before running the scripts again
    load_script()
    assert len(webui.script_callbacks.callback_map["callbacks_ui_tabs"]) == 1


def test_a_reload_ui_makes_a_new_extension_with_its_own_tab_and_sources(webui):
    _, first, _ = build_webui(webui)
    webui.script_callbacks.clear_callbacks()
    _, second, _ = build_webui(webui)   # the WebUI builds every tab anew, txt2img's too
    assert second is not first and second.session is not first.session
    [(_, prompt, _)], [(_, old_prompt, _)] = second.send_buttons, first.send_buttons
    assert prompt.elem_id == old_prompt.elem_id == "txt2img_prompt" and prompt is not old_prompt


def test_generate_runs_in_the_queue_and_fills_the_output_panel(webui, tmp_path):
    _, host, _ = build_webui(webui)
    panel = host.panel
    seen_by_other_extensions = []
    webui.script_callbacks.on_image_saved(lambda params: seen_by_other_extensions.append(params.filename))
    values = {name: getattr(component, "value", None) for name, component in panel.controls.items()}
    values.update(base=BASE, style="4elements-diffusion", face_after="off", seed=7)
    gallery, info, infotext, log = host.generate_fn("task(abc)", *values.values())
    assert "error" not in log, log
    assert [caption for _, caption in gallery] == ["s1 base 512×512", "s2 style 512×512", "s3 1024 1024×1024",
                                                   "s4 1536 1536×1536"]
    info = json.loads(info)
    assert len(info["infotexts"]) == 4 and info["index_of_first_image"] == 0
    assert "TLOK stage: 4/4 1536" in info["infotexts"][-1] and "Time taken" in log
    assert webui.progress.finished_tasks == ["task(abc)"]
    assert webui.sd_models.loads == [title(BASE), title(STYLE)]
    assert webui.shared.opts.data["sd_model_checkpoint"] == title(BASE)    # the user's choice is back
    assert webui.shared.state.job_count == 0 and webui.shared.total_tqdm.cleared
    saved = sorted(p.name for p in Path(host.session.out_dir).glob("*.png"))
    assert saved == ["00000-7-s1-base.png", "00000-7-s2-style.png", "00000-7-s3-1024.png", "00000-7-s4-1536.png"]
    assert seen_by_other_extensions == webui.images.saved and len(webui.images.saved) == 4   # via images.save_image
    from tlok_workflow import outputs
    recipe = outputs.recipe_json_from_png(Path(webui.images.saved[-1]))
    assert json.loads(recipe)["seed"] == 7 and gallery[-1][0].already_saved_as == webui.images.saved[-1]


def test_without_intermediates_only_the_last_stage_is_kept(webui):
    _, host, _ = build_webui(webui)
    webui.shared.opts.data["tlok_workflow_save_intermediates"] = False
    values = {name: getattr(component, "value", None) for name, component in host.panel.controls.items()}
    values.update(base=BASE, style=STYLE, face_after="off", seed=7)
    gallery, _, _, _ = host.generate_fn("task(b)", *values.values())
    assert [caption for _, caption in gallery] == ["s4 1536 1536×1536"]
    assert sorted(p.name for p in Path(host.session.out_dir).glob("*.png")) == ["00000-7-s4-1536.png"]


def test_generate_errors_show_in_the_log_not_as_a_crash(webui):
    _, host, _ = build_webui(webui)
    values = {name: getattr(component, "value", None) for name, component in host.panel.controls.items()}
    values.update(style="missing-model", face_after="off")
    gallery, _, _, log = host.generate_fn("task(x)", *values.values())
    assert gallery is None and "missing-model" in log and "not found; known:" in log


def test_batch_section_runs_in_the_queue_with_one_load_per_checkpoint(webui, tmp_path):
    from PIL import Image

    _, host, _ = build_webui(webui)
    source = tmp_path / "in"
    source.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 0, 0)).save(source / f"img{i}.png")
    values = {name: getattr(component, "value", None) for name, component in host.panel.controls.items()}
    values.update(base=BASE, style=STYLE, face_after="off", ladder="1024", seed=7)
    folders = [str(source), str(tmp_path / "out"), False, False, False]
    gallery, _, _, log = host.batch_fn("task(batch)", *values.values(), *folders)
    assert "3 done" in log and "1 model load(s)" in log, log
    assert webui.sd_models.loads == [title(STYLE)]                 # no txt2img: the base model is never loaded
    assert webui.progress.finished_tasks == ["task(batch)"] and webui.shared.state.job_count == 0
    assert len(list((tmp_path / "out").glob("img*-s2-1024.png"))) == 3 and len(gallery) == 3
    written = sorted(p.name for p in (tmp_path / "out").glob("img*-s*.png"))
    assert sorted(Path(p).name for p in webui.images.saved) == written and len(written) == 6   # the WebUI's saver


def test_pasting_our_infotext_restores_what_was_pasted(webui):
    from tlok_workflow.stage_table import HEADERS as STAGE_HEADERS
    from tlok_workflow.ui import shown
    from tlok_workflow.webui_host import infotext_fields

    _, host, _ = build_webui(webui)
    panel = host.panel
    style_hash = webui.sd_models.get_closet_checkpoint_match(STYLE).shorthash
    info = ("closeup Korra wearing runa outfit shoa hairstyle cosplay photo, smiling\nNegative prompt: blur, photo\n"
            "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 4.5, Seed: 42, Size: 1024x1024, "
            f"Denoising strength: 0.55, Model hash: {style_hash}, Model: 4elements-diffusion, Clip skip: 2, "
            "TLOK stage: 3/4 1024, TLOK pack: 4elements")
    params = webui.infotext_utils.parse_generation_parameters(info)
    fields = infotext_fields(panel)
    updates = webui.infotext_utils.paste_values(fields, params)
    pasted = {component.elem_id: u.get("value") for (component, _), u in zip(fields, updates)}
    rows = pasted.pop("tlok_workflow_stages")
    warning = pasted.pop("tlok_workflow_warnings")
    assert pasted == {"tlok_workflow_prompt": "closeup Korra wearing runa outfit shoa hairstyle cosplay photo, smiling",
                      "tlok_workflow_neg_prompt": "blur, photo", "tlok_workflow_seed": 42.0,
                      "tlok_workflow_outfit": shown(panel.pack, "outfit", "runa"),   # with its description
                      "tlok_workflow_hairstyle": shown(panel.pack, "hairstyle", "shoa"),
                      "tlok_workflow_shot": "closeup", "tlok_workflow_medium": "cosplay photo",
                      "tlok_workflow_preset": None, "tlok_workflow_base": None,
                      "tlok_workflow_style": title(STYLE)}
    column = {name: STAGE_HEADERS.index(name) for name in ("stage", "sampler", "schedule type", "steps", "CFG",
                                                           "denoise")}
    assert [[r[column[n]] for n in column] for r in rows] == [
        ["base", "DPM++ 2M", "Karras", 30, 4.5, 1.0], ["style", "DPM++ 2M", "Karras", 30, 4.5, 0.55],
        ["1024", "DPM++ 2M", "Karras", 30, 4.5, 0.55], ["face", "DPM++ 2M", "Karras", 30, 4.5, 0.4]]
    assert "not restored here: Clip skip" in warning


def test_a_pasted_preset_and_a_core_txt2img_infotext(webui):
    from tlok_workflow.webui_host import infotext_fields

    _, host, _ = build_webui(webui)
    base_hash = webui.sd_models.get_closet_checkpoint_match(BASE).shorthash
    info = ("a dog\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 1, Size: 512x512, "
            f"Model hash: {base_hash}, Model: v1-5, Version: v1.10.1")
    params = webui.infotext_utils.parse_generation_parameters(info)
    fields = infotext_fields(host.panel)
    pasted = {c.elem_id: u.get("value") for (c, _), u in zip(fields, webui.infotext_utils.paste_values(fields, params))}
    assert pasted["tlok_workflow_preset"] == "alternative" and pasted["tlok_workflow_base"] == title(BASE)
    assert pasted["tlok_workflow_style"] is None and pasted["tlok_workflow_warnings"] is None


def test_api_runs_in_the_webui_queue(webui):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from tlok_workflow.chain import build_recipe
    from tlok_workflow.presets import load_pack
    from tlok_workflow.recipe import PromptSpec

    build_webui(webui)
    app = FastAPI()
    webui.script_callbacks.app_started_callback(None, app)
    client = TestClient(app)
    recipe = build_recipe(load_pack(), PromptSpec(), face_after="off", seed=3, ladder=[],
                          checkpoints={"base": BASE, "style": STYLE})
    response = client.post("/tlok-workflow/v1/run", json={"recipe": recipe.to_dict()})
    assert response.status_code == 200, response.text
    assert response.json()["stages"] == ["00000-3 s1 base", "00000-3 s2 style"]
    assert webui.progress.finished_tasks[0].startswith("task(tlok-")
    assert not webui.call_queue.queue_lock.locked() and webui.shared.state.job_count == 0
    passes = len(webui.processing.calls)
    response = client.post("/tlok-workflow/v1/run", json={"recipe": dict(recipe.to_dict(), checkpoints={
        "base": BASE, "style": "nope"})})
    assert response.status_code == 400 and "'nope' not found" in response.json()["detail"]
    assert len(webui.processing.calls) == passes   # refused before the base pass ran


def test_an_api_run_whose_client_went_away_stops_after_its_pass(webui, monkeypatch):
    """Over real HTTP: the client hangs up during the first pass; the WebUI session's should_stop sees it, so the
    run ends there, and the queue is free again."""
    import socket
    import threading
    import time

    from fastapi import FastAPI

    from serving import served
    from tlok_workflow.chain import build_recipe
    from tlok_workflow.presets import load_pack
    from tlok_workflow.recipe import PromptSpec

    _, host, _ = build_webui(webui)
    app = FastAPI()
    webui.script_callbacks.app_started_callback(None, app)
    session = host.session
    started, seen = threading.Event(), []

    def hold(p, step):   # the first pass waits (at most 60 s) for the stop
        if len(webui.processing.calls) == 1 and step == 0:
            started.set()
            deadline = time.monotonic() + 60
            while not session.should_stop() and time.monotonic() < deadline:
                time.sleep(0.02)
            seen.append(session.should_stop())

    monkeypatch.setattr(webui.processing, "on_sampling_step", [hold])
    recipe = build_recipe(load_pack(), PromptSpec(), face_after="off", seed=3, ladder=[],
                          checkpoints={"base": BASE, "style": STYLE})
    with served(app) as url:
        host_port = url.split("//")[1]
        data = json.dumps({"recipe": recipe.to_dict()}).encode()
        client = socket.create_connection(tuple([host_port.split(":")[0], int(host_port.split(":")[1])]))
        client.sendall(f"POST /tlok-workflow/v1/run HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: "
                       f"application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
        assert started.wait(30)
        client.close()
        deadline = time.monotonic() + 30
        while (not seen or webui.call_queue.queue_lock.locked()) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert seen == [True] and len(webui.processing.calls) == 1   # base pass only: the style pass never ran
    assert not webui.call_queue.queue_lock.locked()


def test_on_forge_the_run_goes_to_the_main_thread_and_errors_come_back(webui, monkeypatch):
    import threading

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "webui_stub" / "forge"))
    from modules_forge import main_thread
    from tlok_workflow.webui_host import on_main_thread

    threading.Thread(target=main_thread.loop, daemon=True).start()   # Forge's main thread
    assert on_main_thread(lambda x: (x, threading.current_thread().name), 5)[0] == 5
    assert on_main_thread(threading.current_thread) is not threading.current_thread()

    def fails():
        raise ValueError("checkpoint 'x' not found")

    try:
        with pytest.raises(ValueError, match="'x' not found"):   # Forge itself would return None here
            on_main_thread(fails)
    finally:   # later tests are A1111 again
        for name in [m for m in sys.modules if m.startswith("modules_forge")]:
            del sys.modules[name]


@pytest.mark.parametrize("broken", ["missing", "bad value", "not json"])
def test_a_bad_presets_setting_never_stops_the_webui(webui, tmp_path, capsys, broken):
    """A mistyped or broken user presets folder: the WebUI builds, the tab shows the error naming the file, key
    and value, and Generate runs on the bundled pack."""
    folder = tmp_path / "my-presets"
    if broken != "missing":
        folder.mkdir()
        (folder / "outfits.json").write_text('{"defa": {"token": 5}}' if broken == "bad value" else "{defa")
    webui.shared.opts.data["tlok_workflow_presets_dir"] = str(folder)
    tabs, host, _ = build_webui(webui)   # asserts nothing was reported and every paste binding has its target
    [(blocks, label, _)] = tabs
    shown = [b.value for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "tlok_workflow_pack_error"]
    expected = {"missing": "user presets folder not found", "bad value": "defa.token: expected text, got 5",
                "not json": "not valid JSON"}[broken]
    assert len(shown) == 1 and str(folder) in shown[0] and expected in shown[0], shown
    assert "using the bundled packs" in shown[0]
    values = {name: getattr(component, "value", None) for name, component in host.panel.controls.items()}
    values.update(base=BASE, style=STYLE, face_after="off", seed=3)
    gallery, info, _, log = host.generate_fn("task(p)", *values.values())
    assert "error" not in log and len(gallery) == 4
    assert "wearing defa outfit" in json.loads(info)["infotexts"][-1]   # the bundled pack's outfit


def test_a_tab_that_fails_to_build_leaves_an_error_tab_and_the_webui_up(webui, monkeypatch, capsys):
    from tlok_workflow import webui_host

    def broken(host):
        raise RuntimeError("boom")

    monkeypatch.setattr(webui_host, "build_panel", broken)
    tabs, _, _ = build_webui(webui)   # connect_paste_params_buttons finds the 🌀 binding's target
    [(blocks, label, elem_id)] = tabs
    assert (label, elem_id) == ("TLOK Workflow", "tlok_workflow")
    [message] = [b.value for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "tlok_workflow_error"]
    assert "RuntimeError: boom" in message
    assert "the tab could not be built: RuntimeError: boom" in capsys.readouterr().err


def test_no_callback_of_ours_raises_into_the_webui(webui, monkeypatch, capsys):
    from tlok_workflow import webui_host

    load_script()
    monkeypatch.setattr(webui_host.shared.opts, "add_option", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(webui_host.api, "mount", lambda *a, **k: 1 / 0)
    webui.script_callbacks.ui_settings_callback()
    webui.script_callbacks.app_started_callback(None, None)
    assert webui.script_callbacks.reported == []
    err = capsys.readouterr().err
    assert "on_ui_settings failed" in err and "on_app_started failed" in err and "ZeroDivisionError" in err


def test_infotext_keeps_the_webuis_model_hash_and_version(webui):
    _, host, _ = build_webui(webui)
    values = {name: getattr(component, "value", None) for name, component in host.panel.controls.items()}
    values.update(base=BASE, style=STYLE, face_after="off", seed=7)
    _, info, _, _ = host.generate_fn("task(h)", *values.values())
    infotexts = json.loads(info)["infotexts"]
    style_hash = webui.sd_models.get_closet_checkpoint_match(STYLE).shorthash
    assert f"Model hash: {style_hash}, Model: 4elements-diffusion" in infotexts[-1]
    assert "Version: v1.10.1" in infotexts[-1] and "TLOK version: " in infotexts[-1]
    from tlok_workflow import outputs
    saved = json.loads(outputs.recipe_json_from_png(Path(webui.images.saved[-1])))
    assert saved["hashes"] == {"base": webui.sd_models.get_closet_checkpoint_match(BASE).shorthash,
                               "style": style_hash}


def test_send_to_buttons_carry_the_shown_stages_parameters(webui):
    _, host, _ = build_webui(webui)
    bindings = [b for b in webui.infotext_utils.registered_param_bindings
                if b.paste_button.elem_id == "tlok_workflow_send_to_img2img"]
    assert {(b.tabname, b.source_image_component is host.panel.output.gallery,
             getattr(b.source_text_component, "elem_id", None)) for b in bindings} == \
        {("img2img", True, None), ("img2img", False, "tlok_workflow_stage_infotext")}


def test_selecting_a_gallery_image_shows_that_stages_infotext():
    from tlok_workflow.panel_model import last_stage_infotext, stage_infotext, text_html

    info = json.dumps({"infotexts": ["first\nSteps: 20", "second\nSteps: 10"]})
    text = stage_infotext(info, 0)
    html_info = text_html(text)
    assert text == "first\nSteps: 20" and "first" in html_info and "second" not in html_info
    assert last_stage_infotext(info) == "second\nSteps: 10" and last_stage_infotext("") == ""


def test_on_a_fresh_install_the_checkpoint_boxes_hold_a_checkpoint(webui):
    del webui.shared.opts.data["sd_model_checkpoint"]
    _, host, _ = build_webui(webui)
    assert {host.panel.base.value, host.panel.style.value} <= set(webui.sd_models.checkpoint_tiles())
    assert host.panel.base.value == title(BASE) and host.panel.style.value == title(STYLE)   # v1-5 is the vanilla one
    assert all(getattr(c, "do_not_save_to_config", False) for c in host.panel.controls.values())


def test_with_the_style_model_loaded_the_base_box_holds_another_checkpoint(webui, monkeypatch):
    """Forge Neo starts with the checkpoint used last, often the style model: txt2img must not run on it."""
    webui.shared.opts.data["sd_model_checkpoint"] = title(STYLE)
    tabs, host, _ = build_webui(webui)
    assert (host.panel.base.value, host.panel.style.value) == (title(BASE), title(STYLE))
    from tlok_workflow.webui_host import default_checkpoints   # names that say nothing: the first other one
    assert default_checkpoints(["a.safetensors", "b.safetensors"], "b.safetensors") == {"base": "a.safetensors",
                                                                                        "style": "b.safetensors"}
    assert default_checkpoints(["a.safetensors", "b.safetensors"], "a.safetensors") == {"base": "b.safetensors",
                                                                                        "style": "a.safetensors"}
    assert default_checkpoints(["base.safetensors", "style.safetensors"], "base.safetensors") == {
        "base": "base.safetensors", "style": "style.safetensors"}
    # both boxes on one checkpoint: the plan says so
    values = panel_values(host, base=title(STYLE), style="4elements-diffusion")
    *_, plan = wired(tabs[0][0], host.panel.style, "change")(*values.values())
    assert "warning: base and style are the same checkpoint (4elements-diffusion)" in html.unescape(plan)


def test_send_to_tlok_sets_the_dropdowns_the_prompt_names(webui):
    from tlok_workflow.ui import shown

    _, host, _ = build_webui(webui)
    pack = host.panel.pack
    prompt, negative, outfit, hairstyle, shot, medium = host.sent(
        "closeup Korra wearing runa outfit shoa hairstyle cosplay photo, smiling", "blur")
    assert (prompt, negative, outfit, hairstyle, shot, medium) == (
        "closeup Korra wearing runa outfit shoa hairstyle cosplay photo, smiling", "blur",
        shown(pack, "outfit", "runa"), shown(pack, "hairstyle", "shoa"), "closeup", "cosplay photo")
    *_, outfit, hairstyle, shot, medium = host.sent("a dog in a park", "")
    assert hairstyle == "(none)" and all(u == gr.update() for u in (outfit, shot, medium))


def test_a_gallery_click_shows_the_clicked_stages_infotext(webui):
    from tlok_workflow.panel_model import stage_infotext, text_html

    info = json.dumps({"infotexts": ["first\nSteps: 20", "second\nSteps: 10"]})
    assert (text_html(stage_infotext(info, 1)), stage_infotext(info, 1)) == ("<p>second<br>\nSteps: 10</p>",
                                                                             "second\nSteps: 10")
    assert stage_infotext(info, -1) is None and stage_infotext("", 0) is None
    tabs, _, _ = build_webui(webui)
    assert "tlok_workflow_generation_info_button" in elem_ids(tabs[0][0])   # what the WebUI's gallery click presses


def test_paste_finds_the_checkpoint_by_name_where_titles_have_no_hash(webui, monkeypatch):
    """Forge Neo's checkpoint titles are bare file names ("style.safetensors")."""
    from tlok_workflow.webui_host import infotext_fields

    _, host, _ = build_webui(webui)
    monkeypatch.setattr(host, "checkpoints", lambda: ["base.safetensors", "sub/style.safetensors"])
    params = webui.infotext_utils.parse_generation_parameters(
        "x\nSteps: 2, Seed: 1, Model hash: 0123456789, Model: style, TLOK stage: 3/4 128")
    fields = infotext_fields(host.panel)
    pasted = {c.elem_id: u.get("value") for (c, _), u in zip(fields, webui.infotext_utils.paste_values(fields, params))}
    assert pasted["tlok_workflow_style"] == "sub/style.safetensors" and pasted["tlok_workflow_base"] is None


def panel_values(host, **changes):
    values = {name: getattr(component, "value", None) for name, component in host.panel.controls.items()}
    values.update(changes)
    return values


def with_upscaler(recipe, name):
    return apply_settings(recipe, StageSettings(upscaler=name))


def api_client(webui):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    webui.script_callbacks.app_started_callback(None, app)
    return TestClient(app)


def tiny_recipe(**kw):
    from tlok_workflow.chain import build_recipe
    from tlok_workflow.presets import load_pack
    from tlok_workflow.recipe import PromptSpec

    return build_recipe(load_pack(), PromptSpec(), face_after="off", seed=3, ladder=[1024],
                        checkpoints={"base": BASE, "style": STYLE}, **kw)


def test_an_upscaler_without_weights_on_disk_is_refused_before_any_pass_and_in_the_plan(webui):
    """A1111 lists R-ESRGAN 4x+ Anime6B by its download URL until its .pth is in models/RealESRGAN; offline the
    download fails, the WebUI logs it and resizes with Lanczos, and the run said Upscaler: R-ESRGAN 4x+ Anime6B."""
    (Path(webui.paths_internal.models_path) / "RealESRGAN" / "RealESRGAN_x4plus_anime_6B.pth").unlink()
    webui.modelloader.load_upscalers()   # as at the WebUI's start
    tabs, host, _ = build_webui(webui)
    client = api_client(webui)
    recipe = with_upscaler(tiny_recipe(), "R-ESRGAN 4x+ Anime6B").to_dict()
    planned = client.post("/tlok-workflow/v1/plan", json={"recipe": recipe})
    ran = client.post("/tlok-workflow/v1/run", json={"recipe": recipe})
    assert planned.status_code == ran.status_code == 400 and planned.json() == ran.json()
    assert ran.json()["detail"] == ("stage style: upscaler 'R-ESRGAN 4x+ Anime6B' has no weights on disk: put "
                                    "RealESRGAN_x4plus_anime_6B.pth in "
                                    f"{Path(webui.paths_internal.models_path) / 'RealESRGAN'} (the WebUI would "
                                    "download https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/"
                                    "RealESRGAN_x4plus_anime_6B.pth)")
    assert webui.processing.calls == [] and webui.images.resized == []
    # the tab: the plan warns with the same line, and Generate refuses before the base pass
    values = panel_values(host, base=BASE, style=STYLE, face_after="off", ladder="1024",
                          stages=stage_rows(with_upscaler(tiny_recipe(), "R-ESRGAN 4x+ Anime6B")))
    *_, plan = wired(tabs[0][0], host.panel.style, "change")(*values.values())
    assert f"warning: {ran.json()['detail']}" in html.unescape(plan)
    gallery, _, _, log = host.generate_fn("task(u)", *values.values())
    assert gallery is None and "has no weights on disk" in log and webui.processing.calls == []
    assert "R-ESRGAN 4x+ Anime6B" not in host.upscalers and "R-ESRGAN 4x+" in host.upscalers   # the table's note


def test_an_esrgan_file_the_webuis_pickle_check_refuses_is_refused_before_any_pass(webui):
    """A .pth saved by torch >= 2.6 (zip format with .format_version): A1111's check refuses it at every load."""
    torch = pytest.importorskip("torch")
    esrgan = Path(webui.paths_internal.models_path) / "ESRGAN"
    torch.save({"w": torch.zeros(1)}, esrgan / "4x-new.pth")
    torch.save({"w": torch.zeros(1)}, esrgan / "4x-old.pth", _use_new_zipfile_serialization=False)
    webui.modelloader.load_upscalers()
    _, host, _ = build_webui(webui)
    assert "4x-old" in host.upscalers and "4x-new" not in host.upscalers
    client = api_client(webui)
    ran = client.post("/tlok-workflow/v1/run", json={"recipe": with_upscaler(tiny_recipe(), "4x-new").to_dict()})
    assert ran.status_code == 400 and webui.processing.calls == []
    assert ran.json()["detail"] == (f"stage style: upscaler '4x-new' is refused by the WebUI's pickle check: bad "
                                    f"file inside {esrgan / '4x-new.pth'}: 4x-new/.format_version")
    ran = client.post("/tlok-workflow/v1/run", json={"recipe": with_upscaler(tiny_recipe(), "4x-old").to_dict()})
    assert ran.status_code == 200 and webui.realesrgan_model.runs == ["4x-old.pth"]   # 512 → 1024: one model pass
    assert "Upscaler: 4x-old" in ran.json()["infotexts"][-1]


def test_an_upscaler_that_falls_back_at_run_time_is_recorded_as_what_ran(webui):
    """The weights go missing after the check (or fail to load for another reason): the WebUI logs it and resizes
    with Lanczos; the image says Lanczos, and the log says the chosen one did not run."""
    weights = Path(webui.paths_internal.models_path) / "RealESRGAN" / "RealESRGAN_x4plus_anime_6B.pth"
    _, host, _ = build_webui(webui)
    webui.processing.on_sampling_step.append(lambda p, step: weights.unlink(missing_ok=True))
    values = panel_values(host, base=BASE, style=STYLE, face_after="off", ladder="1024", seed=3,
                          stages=stage_rows(with_upscaler(tiny_recipe(), "R-ESRGAN 4x+ Anime6B")))
    gallery, info, _, log = host.generate_fn("task(f)", *values.values())
    assert len(gallery) == 3 and webui.realesrgan_model.runs == []
    assert webui.errors.reported == ["Unable to load RealESRGAN model https://github.com/xinntao/Real-ESRGAN/"
                                     "releases/download/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth"]
    last = json.loads(info)["infotexts"][-1]
    assert "Upscaler: Lanczos" in last and "R-ESRGAN" not in last
    assert "s3 1024: upscaler R-ESRGAN 4x+ Anime6B did not run (the host&#x27;s log says why); Lanczos enlarged " \
           "the image instead" in log


def test_none_is_not_offered_and_the_table_note_names_every_upscaler_that_runs(webui, monkeypatch):
    """"None" is a Lanczos resize on both hosts; Forge Neo lists neither Lanczos nor Nearest, which are ours."""
    _, host, _ = build_webui(webui)
    assert host.upscalers == ["Lanczos", "Nearest", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"]
    monkeypatch.setattr(webui.shared, "sd_upscalers", [u for u in webui.shared.sd_upscalers
                                                       if u.name not in ("Lanczos", "Nearest")])   # as Neo's
    tabs, host, _ = build_webui(webui)
    [note] = [b.value for b in tabs[0][0].blocks.values() if "Upscalers (enlarge" in str(getattr(b, "value", ""))]
    assert "Upscalers (enlarge before an img2img pass): Lanczos, Nearest, R-ESRGAN 4x+, R-ESRGAN 4x+ Anime6B." in note
    client = api_client(webui)
    ran = client.post("/tlok-workflow/v1/run", json={"recipe": with_upscaler(tiny_recipe(), "None").to_dict()})
    assert ran.status_code == 400
    assert "upscaler: 'None' is not an upscaler this host lists (listed: Lanczos, Nearest, " in ran.json()["detail"]


def test_a_run_sent_while_the_webui_loads_its_first_model_waits_for_it(webui, monkeypatch):
    """A1111 answers its API while a start-up thread still loads the first model (shared.sd_model); a run that
    swapped checkpoints meanwhile failed with a 500, while a core txt2img sent at the same moment waited."""
    import threading

    build_webui(webui)
    client = api_client(webui)
    loading, release = threading.Event(), threading.Event()
    real_load = webui.sd_models.load_model

    def slow_load(*args, **kwargs):   # the start-up load, held until the run has been sent
        loading.set()
        release.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(webui.sd_models, "load_model", slow_load)
    startup = threading.Thread(target=webui.sd_models.model_data.get_sd_model)   # initialize.load_model
    startup.start()
    assert loading.wait(30)
    answer = {}
    run = threading.Thread(target=lambda: answer.update(
        response=client.post("/tlok-workflow/v1/run", json={"recipe": tiny_recipe().to_dict()})))
    run.start()
    run.join(2)   # a run that does not wait has its 500 by now
    release.set()
    run.join(60)
    startup.join(30)
    assert answer["response"].status_code == 200, answer["response"].text
    assert webui.sd_models.loads == [title(BASE), title(STYLE)]   # the start-up load (the user's), then the swap


def test_a_checkpoint_has_one_spelling_before_and_after_the_run_that_hashes_it(webui):
    """A1111 titles a checkpoint 'style.safetensors' until it first hashes it (at its first load), then
    'style.safetensors [faa827b3c9]': the boxes showed the first and a paste the second."""
    from tlok_workflow.webui_host import infotext_fields

    webui.sd_models.unhashed.add(STYLE)
    webui.sd_models.list_models()
    tabs, host, _ = build_webui(webui)
    panel = host.panel
    assert panel.style.value == STYLE and STYLE in webui.sd_models.checkpoint_tiles()   # no hash yet
    values = panel_values(host, base=BASE, style=panel.style.value, face_after="off", ladder="none", seed=4)
    host.generate_fn("task(t)", *values.values())   # the run hashes the style model for its infotext
    hashed = title(STYLE)
    assert hashed == f"{STYLE} [{webui.sd_models.get_closet_checkpoint_match(STYLE).shorthash}]"
    base_box, style_box = wired(tabs[0][0], panel.generate, "click", then=True)(values["base"], values["style"])
    assert style_box["value"] == hashed and hashed in style_box["choices"] and STYLE not in style_box["choices"]
    assert base_box["value"] == title(BASE)
    info = f"x\nSteps: 2, Seed: 1, Model hash: {hashed[-11:-1]}, Model: 4elements-diffusion, TLOK stage: 2/2 style"
    fields = infotext_fields(panel)
    pasted = {c.elem_id: u.get("value") for (c, _), u in zip(fields, webui.infotext_utils.paste_values(
        fields, webui.infotext_utils.parse_generation_parameters(info)))}
    assert pasted["tlok_workflow_style"] == style_box["value"]   # the paste spells it as the box now does


def test_after_generate_the_gallery_preview_selects_the_last_stage(webui):
    """The WebUI's preview opens on the first image; the infotext shows the last stage: the page script selects the
    last thumbnail once the new generation info arrives (tried live in A1111 and Forge Neo)."""
    tabs, host, _ = build_webui(webui)
    blocks, info = tabs[0][0], host.panel.output.generation_info
    if isinstance(blocks.fns, dict):
        scripts = [f.js for f in blocks.fns.values() if (info._id, "change") in [tuple(t) for t in f.targets]]
    else:
        scripts = [d.get("js") for d in blocks.dependencies if info._id in d["targets"] and d["trigger"] == "change"]
    assert "tlok_workflow_select_last" in scripts
    assert "function tlok_workflow_select_last(info)" in (ROOT / "javascript" / "tlok_workflow.js").read_text()


def test_the_webui_saver_writes_its_format_under_a_free_name(webui, tmp_path, monkeypatch):
    from PIL import Image

    from tlok_workflow import webui_host

    monkeypatch.setitem(webui.shared.opts.data, "samples_format", "jpg")
    (tmp_path / "x.jpg").write_bytes(b"the user's")
    (tmp_path / "x-1.jpg").symlink_to(tmp_path / "gone.jpg")   # a dangling link is taken too: never written through
    saved = [webui_host.save_stage(tmp_path, "x", Image.new("RGB", (8, 8)), "info") for _ in range(2)]
    assert [p.name for p in saved] == ["x-2.jpg", "x-3.jpg"] and webui.images.saved == [str(p) for p in saved]
    assert (tmp_path / "x.jpg").read_bytes() == b"the user's" and not (tmp_path / "gone.jpg").exists()
def test_the_tabs_compare_runs_in_the_queue_and_reuse_works_within_its_output_folder(webui):
    _, host, _ = build_webui(webui)
    panel = host.panel
    values = {name: getattr(component, "value", None) for name, component in panel.controls.items()}
    values.update(base=BASE, style=STYLE, face_after="off", seed=7)
    k = {name: getattr(component, "value", None) for name, component in panel.compare_controls.items()}
    k.update(compare_x_path="stages.1536.cfg_scale", compare_x_values="7, 4")
    gallery, info, _, log = host.compare_fn("task(c)", *values.values(), *k.values())
    assert [caption for _, caption in gallery] == ["00000-7-grid", "cell 1: stages.1536.cfg_scale=7",
                                                   "cell 2: stages.1536.cfg_scale=4"]
    assert "2 cell(s): 5 pass(es) run, 3 reused" in log and webui.progress.finished_tasks == ["task(c)"]
    assert webui.sd_models.loads == [title(BASE), title(STYLE)]
    assert webui.shared.opts.data["sd_model_checkpoint"] == title(BASE)    # the user's choice is back
    gallery, _, _, log = host.generate_fn("task(g)", *values.values())     # the cell with CFG 7, as Generate
    assert len(gallery) == 4 and "00001-7: s1–s4 reused from 00000-7-c1; 0 passes run" in log
    assert webui.sd_models.loads == [title(BASE), title(STYLE)]            # nothing ran, nothing loaded
    assert gallery[-1][0].already_saved_as.endswith("00000-7-c1-s4-1536.png")
