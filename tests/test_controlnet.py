"""ControlNet standalone (backends/controlnets.py, the diffusers backend) and a tiled, guided demo chain from the CLI,
the panel and the API. The ControlNets are tiny random ones made from the demo UNet (ControlNetModel.from_unet), saved
as users get them: the original single file (.safetensors, .pth), a diffusers file and a diffusers folder."""
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ldm_checkpoint import controlnet_to_ldm, tiny_controlnet, unet_to_ldm
from tlok_workflow import outputs
from tlok_workflow.backends import controlnets
from tlok_workflow.backends.demo_model import build_demo_pipeline, demo_controlnet_config
from tlok_workflow.cli import main
from tlok_workflow.model_hash import autov2

ROOT = Path(__file__).resolve().parent.parent


def pixels(path):
    return hashlib.sha256(Image.open(path).convert("RGB").tobytes()).hexdigest()


class RunsACommand:
    def __reduce__(self):
        return os.system, ("echo owned",)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """models/ControlNet as a user has it: the tiny ControlNet in every published layout, and files that are not one."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("models") / "ControlNet"
    folder.mkdir()
    controlnet = tiny_controlnet()
    state = controlnet.state_dict()
    save_file(controlnet_to_ldm(state, controlnet.config), str(folder / "tiny-tile.safetensors"))   # as published
    torch.save(controlnet_to_ldm(state, controlnet.config, prefix=""), str(folder / "tiny-tile-old.pth"))
    save_file({key: value.contiguous() for key, value in state.items()}, str(folder / "tiny-diffusers.safetensors"))
    controlnet.save_pretrained(str(folder / "tiny-folder"))
    unet = build_demo_pipeline("demo-style").unet   # an SD checkpoint's UNet is not a ControlNet
    save_file({key: value.contiguous() for key, value in unet_to_ldm(unet.state_dict(), unet.config).items()},
              str(folder / "a-checkpoint.safetensors"))
    sd2 = tiny_controlnet(cross_attention_dim=1024)   # the same, made for a model with SD 2.x's text width
    save_file(controlnet_to_ldm(sd2.state_dict(), sd2.config), str(folder / "tiny-sd2.safetensors"))
    (folder / "evil.pth").write_bytes(pickle.dumps(RunsACommand()))
    return folder, state


@pytest.fixture(scope="module")
def backend(folder):
    from tlok_workflow.backends.diffusers_backend import DiffusersBackend

    return DiffusersBackend(device="cpu", controlnets_dir=folder[0])


@pytest.mark.parametrize("name", ["tiny-tile", "tiny-tile-old", "tiny-diffusers", "tiny-folder"])
def test_every_published_layout_loads_as_the_same_controlnet(backend, folder, name):
    assert backend.controlnet_problem(name, "demo-style") == ""
    loaded = backend._controlnet_model(name, "demo-style").state_dict()
    assert loaded.keys() == folder[1].keys() and all(torch.equal(loaded[k], folder[1][k]) for k in loaded)


@pytest.mark.parametrize("name, message", [
    ("a-checkpoint", "a-checkpoint.safetensors: not a ControlNet (its keys look like a Stable Diffusion checkpoint"),
    ("tiny-sd2", "tiny-sd2.safetensors: a ControlNet for SD 2.x, not for this model"),
    ("evil", "evil.pth: refused: it pickles posix.system, which a weights file has no need for"),
    ("nope", "not found in"),
])
def test_a_file_that_is_not_a_controlnet_for_this_model_is_named_with_what_it_is(backend, name, message):
    assert message in backend.controlnet_problem(name, "demo-style")


def test_the_demo_models_tiny_controlnet_is_refused_for_a_real_sd15_model(folder):
    assert "not for this model (SD 1.x)" in controlnets.problem(folder[0] / "tiny-tile.safetensors",
                                                                controlnets.expected_config("v1-5.safetensors"))


def test_the_shipped_sd15_config_is_the_controlnet_an_sd15_unet_takes():
    from diffusers import ControlNetModel, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(
            str(ROOT / "tlok_workflow" / "backends" / "sd1_config" / "unet")))
        derived = ControlNetModel.from_unet(unet, load_weights_from_unet=False).config
    shipped = controlnets.expected_config("v1-5.safetensors")
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in derived.items() if not k.startswith("_")} == \
        {k: v for k, v in shipped.items() if not k.startswith("_")}
    assert shipped["cross_attention_dim"] == 768 and demo_controlnet_config()["cross_attention_dim"] == 32


def test_a_guided_pass_runs_on_the_loaded_models_own_components(backend):
    model = backend._model("demo-style")
    guided = model.guided(backend._controlnet_model("tiny-tile", "demo-style"))
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(guided, name) is getattr(model.pipelines["img2img"], name)   # no second copy of the model
    assert guided.controlnet is backend._controlnet_model("tiny-tile", "demo-style")   # loaded once, kept


def stages(folder):
    return sorted(p for p in Path(folder).glob("*-s[0-9]*-*.png"))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tlok_workflow", "run", "--demo", "--seed", "7", "--no-sheet",
                           "--face-after", "off", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_the_demo_chain_runs_in_tiles_guided_by_a_controlnet_file_from_the_cli(folder, tmp_path):
    guided = run_cli("--out", str(tmp_path / "guided"), "--redraw", "tiles",
                     "--controlnet", str(folder[0] / "tiny-tile.safetensors"))
    assert guided.returncode == 0, guided.stderr
    assert "192×192 in 9 tiles of 64 (+8)" in guided.stdout and "ControlNet" in guided.stdout
    final = stages(tmp_path / "guided")[-1]
    text = outputs.read_png_text(final)
    assert "Redraw: tiles 64/8" in text["parameters"]
    assert f'ControlNet: "tiny-tile [{autov2(folder[0] / "tiny-tile.safetensors")}] (1, 0–1)"' in text["parameters"]
    ran = json.loads(text["tlok_recipe"])["stages"][-1]   # the recipe as it ran: the tiles and the ControlNet's path
    assert (ran["redraw"], ran["controlnet"]) == ("tiles", str(folder[0] / "tiny-tile.safetensors"))
    unguided = run_cli("--out", str(tmp_path / "unguided"), "--redraw", "tiles")
    assert unguided.returncode == 0, unguided.stderr
    assert pixels(stages(tmp_path / "unguided")[-1]) != pixels(final)   # the ControlNet guided the tiles
    again = subprocess.run([sys.executable, "-m", "tlok_workflow", "run", "--recipe", str(final), "--out",
                            str(tmp_path / "again"), "--no-sheet"], capture_output=True, text=True, cwd=ROOT,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert pixels(stages(tmp_path / "again")[-1]) == pixels(final)   # each tile's seed is recorded: it repeats


@pytest.mark.parametrize("args, message", [
    (["--controlnet", "a-checkpoint"], "stage style: ControlNet 'a-checkpoint' "),
    (["--redraw", "tiles", "--tile-size", "256"], "tile_size: 256 is larger than the 64×64 image"),
    (["--redraw", "tiles", "--tile-overlap", "32"], "tile_overlap: 32 is not less than half the tile (64)"),
    (["--preset", "quick-tiled"], "ControlNet 'control_v11f1e_sd15_tile' not found in"),
])
def test_bad_tiles_and_controlnets_are_one_line_before_any_pass(folder, tmp_path, args, message):
    done = run_cli("--out", str(tmp_path / "out"), "--controlnets", str(folder[0]), *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr and not list((tmp_path / "out").glob("*.png"))


def test_the_tiled_preset_runs_without_its_controlnet_only_when_the_user_clears_it(tmp_path):
    done = run_cli("--out", str(tmp_path / "out"), "--preset", "quick-tiled", "--controlnet", "")
    assert done.returncode == 0, done.stderr
    assert "Redraw: tiles 64/8" in outputs.read_png_text(stages(tmp_path / "out")[-1])["parameters"]
    assert "ControlNet" not in outputs.read_png_text(stages(tmp_path / "out")[-1])["parameters"]


# The demo chain (seed 7) as it ran before tiles and ControlNets existed: `run --demo --seed 7`, stage by stage.
BEFORE_TILES = ["8a7482989f0defb6", "a0ab6373adf38596", "d33cea6df6619d50", "91608480a2f9a08d"]


def test_recipes_without_the_new_fields_give_the_same_pixels_as_before(tmp_path):
    assert main(["run", "--demo", "--seed", "7", "--out", str(tmp_path / "now"), "--no-sheet"]) == 0
    assert [pixels(p)[:16] for p in stages(tmp_path / "now")] == BEFORE_TILES
    old = tmp_path / "old.json"   # a recipe saved before the new fields: it has none of them
    old.write_text((ROOT / "tests" / "data" / "demo-recipe-before-tiles.json").read_text())
    assert "redraw" not in old.read_text()
    assert main(["run", "--recipe", str(old), "--out", str(tmp_path / "old"), "--no-sheet"]) == 0
    assert [pixels(p)[:16] for p in stages(tmp_path / "old")] == BEFORE_TILES


def test_the_api_runs_a_tiled_guided_request_naming_the_controlnet_as_listed(folder, tmp_path):
    pytest.importorskip("gradio")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tlok_workflow import api
    from tlok_workflow.app import make_host

    app = FastAPI()
    api.mount(app, make_host(tmp_path / "out", controlnets=folder[0]).session)
    client = TestClient(app)
    body = {"request": {"demo": True, "seed": 7, "face_after": "off",
                        "every_pass": {"redraw": "tiles", "controlnet": "tiny-tile"}}}
    plan = client.post("/tlok-workflow/v1/plan", json=body).json()
    assert "192×192 in 9 tiles of 64 (+8)" in plan["text"] and "ControlNet tiny-tile (1, 0–1)" in plan["text"]
    response = client.post("/tlok-workflow/v1/run", json=body)
    assert response.status_code == 200, response.text
    assert "Redraw: tiles 64/8" in response.json()["infotexts"][-1]
    assert 'ControlNet: "tiny-tile [' in response.json()["infotexts"][-1]
    path = dict(body, request=dict(body["request"], every_pass={"controlnet": str(folder[0] / "tiny-tile.pth")}))
    refused = client.post("/tlok-workflow/v1/run", json=path)   # a request names what the host lists, never a path
    assert refused.status_code == 400 and "is not a ControlNet this host lists" in refused.json()["detail"]


def test_the_panel_runs_the_tiles_and_controlnet_typed_into_its_stage_table(folder, tmp_path):
    gr = pytest.importorskip("gradio")
    from tlok_workflow import stage_table, ui
    from tlok_workflow.app import make_host

    host = make_host(tmp_path / "out", controlnets=folder[0])
    with gr.Blocks():
        panel = ui.build_panel(host)
    v = {name: getattr(component, "value", None) for name, component in panel.controls.items()}
    v.update(face_after="off", seed=7)
    rows = panel.model.table(v)
    redraw, controlnet = stage_table.HEADERS.index("redraw"), stage_table.HEADERS.index("ControlNet")
    rows[-1][redraw], rows[-1][controlnet] = "tiles 64/8", "tiny-tile (0.8, 0–0.9)"   # the 1536 pass
    v["stages"] = rows
    *_, (gallery, _, infotext, log) = host.run_streaming(panel, tuple(v.values()))
    assert [caption for _, caption in gallery][-1] == "s4 1536 192×192", log
    assert "Redraw: tiles 64/8" in infotext and "tiny-tile [" in infotext and "(0.8, 0–0.9)" in infotext
