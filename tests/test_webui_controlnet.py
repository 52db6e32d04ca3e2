"""Tiles and ControlNet in the WebUI (backends/webui.py, webui_controlnet.py) against the stand-in: A1111 with
sd-webui-controlnet and Forge's built-in ControlNet, beside other always-on scripts of the img2img tab."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlok_workflow import tiles
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import Recipe
from tlok_workflow.runner import Runner, make_items, model_problems
from webui_stub.env import STYLE, title
pytest_plugins = ["webui_stub.env"]   # the `webui` and `controlnet` fixtures

PACK = load_pack()


def tiled(controlnet="control_v11f1e_sd15_tile", **stage):
    return Recipe.from_dict({"seed": 40, "checkpoints": {"style": STYLE}, "prompt": {"extra": "<lora:korra:0.8>"},
                             "stages": [{"kind": "img2img", "label": "192", "width": 192, "height": 192, "steps": 4,
                                         "redraw": "tiles", "tile_size": 64, "tile_overlap": 8,
                                         "controlnet": controlnet, "controlnet_weight": 0.6, "controlnet_end": 0.8,
                                         **stage}]})


def run(webui, recipe, tmp_path):
    from tlok_workflow.backends.webui import WebUIBackend

    start = tmp_path / "start.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(start)
    out = Path(webui.shared.opts.data["tlok_workflow_outdir"])
    result = Runner(WebUIBackend(outpath="unused"), PACK, out, contact_sheets=False).run(
        recipe, make_items(recipe, 1, out, [start]))
    return start, result


def test_each_tile_goes_to_the_controlnet_script_alone_with_its_own_crop(webui, controlnet, tmp_path):
    from tlok_workflow.backends.webui import WebUIBackend

    tab = webui.scripts.scripts_img2img
    slices = [(s.args_from, s.args_to) for s in tab.alwayson_scripts]
    start, result = run(webui, tiled(), tmp_path)
    enlarged = Image.open(start).resize((192, 192), Image.LANCZOS)
    grid = tiles.layout((192, 192), 64, 8, seed=40)
    calls = webui.processing.calls
    assert len(calls) == 9 and len(controlnet.runs) == 9 and webui.errors.reported == []
    (listed,) = [n for n in WebUIBackend().controlnet_names() if n.startswith("control_v11f1e_sd15_tile")]
    for p, (guided, units), tile in zip(calls, controlnet.runs, grid):
        assert guided is p and [s.title() for s in p.scripts.alwayson_scripts] == ["ControlNet"]
        assert p.scripts.alwayson_scripts[0] is not tab.alwayson_scripts[2]   # a copy: the tab's keeps its slice
        assert (p.steps, p.sampler_name, p.seed) == (4, "Euler a", tile.seed)   # the sampler script did not run
        assert "rewritten" not in p.prompt and "<lora:korra:0.8>" in p.prompt
        (unit,) = units
        assert unit.model == listed and unit.module in ("none", "None")   # as the host lists it ("… [hash]")
        assert (unit.weight, unit.guidance_start, unit.guidance_end) == (0.6, 0.0, 0.8)
        assert unit.resize_mode == "Just Resize" and unit.save_detected_map is False
        assert unit.image.tobytes() == np.asarray(enlarged.crop(tile.window)).tobytes()   # the tile's crop
        assert (p.width, p.height) == (tile.window[2] - tile.window[0], tile.window[3] - tile.window[1])
    assert [(s.args_from, s.args_to) for s in tab.alwayson_scripts] == slices
    assert len(webui.extra_networks.activated) == 9   # the prompt's LoRA on every tile, as without a ControlNet
    assert all(networks == {"lora": ["korra"]} for _, networks in webui.extra_networks.activated)
    info = Image.open(result.outputs[0].path).info["parameters"]
    assert "Redraw: tiles 64/8" in info and 'ControlNet: "control_v11f1e_sd15_tile [' in info
    assert "(0.6, 0–0.8)" in info


@pytest.mark.parametrize("controlnet", ["a1111"], indirect=True)
def test_sd_webui_controlnet_reads_its_model_once_for_all_the_tiles(webui, controlnet, tmp_path):
    # Seen live (A1111 1.10.1, sd-webui-controlnet 56cec5b2): "Loading model: control_v11f1e_sd15_tile" at every
    # tile, 4-12 s each on CPU, while a fresh copy of the script per pass forgot the checkpoint its cache was for.
    run(webui, tiled(), tmp_path)
    run(webui, tiled(), tmp_path)
    assert len(controlnet.runs) == 18 and len(controlnet.loads) == 1


def test_on_forge_neo_tiles_off_its_64_px_grid_are_refused_before_any_pass_and_tiles_on_it_run(webui, tmp_path,
                                                                                              monkeypatch):
    # Seen live (Forge Neo 2.26): tiles 64/16 of a 128² stage stopped after the first tile with "tile 0: redrawn at
    # (64, 64), expected (80, 80)": Neo rounds every pass's size to a multiple of 64.
    from tlok_workflow.backends.webui import WebUIBackend

    # Forge Neo's option at its default: registered, but not in opts.data once the WebUI loaded its config.json
    monkeypatch.setitem(webui.shared.opts.data_labels, "res_step", webui.options.OptionInfo(64, "Resolution Step"))
    (found,) = model_problems(WebUIBackend, tiled(controlnet=""))
    assert found == ("stage 192: tiles 64/8: this host makes every pass in steps of 64 px, so the tile size and "
                     "overlap must be multiples of 64 (e.g. tiles 512/64)")
    with pytest.raises(ValueError, match="tiles 64/8: this host makes every pass in steps of 64 px"):
        run(webui, tiled(controlnet=""), tmp_path)
    assert webui.processing.calls == []
    run(webui, tiled(controlnet="", width=320, height=320, tile_size=192, tile_overlap=64), tmp_path)
    assert [(p.width, p.height) for p in webui.processing.calls] == [(256, 256), (256, 256), (256, 256), (256, 256)]


@pytest.mark.parametrize("name, problem", [
    ("controlnet_sdxl_tile", "a ControlNet for SDXL, not for this model (SD 1.x)"),
    ("control_v11p_sd15_canny", "not found; the WebUI's ControlNet models: "),
])
def test_a_controlnet_that_cannot_guide_the_pass_is_refused_before_any_pass(webui, controlnet, tmp_path, name,
                                                                            problem):
    from tlok_workflow.backends.webui import WebUIBackend

    found = model_problems(WebUIBackend, tiled(name))
    assert len(found) == 1 and problem in found[0] and found[0].startswith(f"stage 192: ControlNet {name!r}")
    with pytest.raises(ValueError, match="clear the stage's ControlNet to redraw without one"):
        run(webui, tiled(name), tmp_path)
    assert webui.processing.calls == []


def test_without_a_controlnet_in_the_webui_a_stage_naming_one_is_refused_and_one_without_runs(webui, tmp_path):
    from tlok_workflow.backends.webui import WebUIBackend
    from tlok_workflow.webui_host import WebUISession

    (found,) = model_problems(WebUIBackend, tiled())
    assert "not available: this WebUI has no ControlNet (A1111: install the sd-webui-controlnet extension" in found
    with pytest.raises(ValueError, match=r"recipe.stages\[0\].controlnet: 'control_v11f1e_sd15_tile': not available: "
                                         "this WebUI has no ControlNet \\(A1111: install the sd-webui-controlnet"):
        WebUISession().confine(tiled())   # what an API request naming it gets: why, not only 'listed: none'
    run(webui, tiled(controlnet=""), tmp_path)   # the user cleared it: the tiles run, unguided
    assert len(webui.processing.calls) == 9 and all(p.scripts is None for p in webui.processing.calls)
    assert all(p.override_settings == {"sd_model_checkpoint": title(STYLE)} for p in webui.processing.calls)


def test_a_pasted_tiled_stage_gets_its_tiles_and_controlnet_back_and_only_it(webui):
    from tlok_workflow import stage_table, webui_paste

    info = ("full-shot Korra wearing defa outfit stada hairstyle tlok artstyle\nNegative prompt: blur\n"
            "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 42, Size: 1536x1536, "
            "Denoising strength: 0.5, Model: 4elements-diffusion, Upscaler: Lanczos, Redraw: tiles 512/64, "
            'ControlNet: "control_v11f1e_sd15_tile [0123456789] (0.6, 0–0.8)", TLOK stage: 4/5 1536, '
            'TLOK tiles: "3×3, seeds 42-50"')
    params = webui.infotext_utils.parse_generation_parameters(info)
    rows = webui_paste.pasted_stage_rows(PACK, {"base": "base", "style": "style"}, params)
    column = {name: stage_table.HEADERS.index(name) for name in ("stage", "redraw", "ControlNet")}
    assert [[r[column[n]] for n in column] for r in rows] == [
        ["base", "–", "–"], ["style", "whole", ""], ["1024", "whole", ""],
        ["1536", "tiles 512/64", "control_v11f1e_sd15_tile (0.6, 0–0.8)"], ["face", "–", "–"]]
    assert webui_paste.not_restored(params) == ["Upscaler"]   # Redraw and ControlNet are restored
