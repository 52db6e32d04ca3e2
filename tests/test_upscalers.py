"""Stage upscalers: the Lanczos default keeps the old pixels; ESRGAN-family files run tiled with spandrel."""
import importlib.util
import sys

import numpy as np
import pytest
from PIL import Image

from fakes import FakeBackend
from tlok_workflow import outputs
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec, Recipe, RecipeError
from tlok_workflow.runner import Runner, make_items

PACK = load_pack("4elements")


def recipe(upscaler=None, **kw):
    r = build_recipe(PACK, PromptSpec(), demo=True, seed=10, face_after="off", **kw)
    for stage in r.stages:
        stage.steps = 2
        if upscaler and stage.kind == "img2img":
            stage.upscaler = upscaler
    return r


def noise(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_the_default_lanczos_gives_exactly_the_old_resize(tmp_path):
    backend = FakeBackend()
    result = Runner(backend, PACK, tmp_path, contact_sheets=False).run(recipe(), make_items(recipe(), 1, tmp_path))
    style_image = outputs.load_image(result.outputs[1].path)
    given = backend.requests[2].image   # the 1024 pass (128² in the demo chain)
    assert given.tobytes() == style_image.resize((128, 128), Image.LANCZOS).tobytes()
    assert "Upscaler: Lanczos" in outputs.read_png_text(result.outputs[2].path)["parameters"]


def test_an_unknown_upscaler_fails_before_any_pass_listing_the_known_ones(tmp_path):
    backend = FakeBackend()
    with pytest.raises(ValueError, match=r"stage style: upscaler 'R-ESRGAN 4x\+' not found; available: Lanczos, "
                                         r"Nearest"):
        Runner(backend, PACK, tmp_path).run(recipe("R-ESRGAN 4x+"), make_items(recipe(), 1, tmp_path))
    assert backend.requests == [] and not list(tmp_path.iterdir())


def test_only_img2img_stages_take_an_upscaler():
    data = recipe().to_dict()
    data["stages"][0]["upscaler"] = "Nearest"
    with pytest.raises(RecipeError, match=r"recipe.stages\[0\].upscaler: only img2img stages take an upscaler"):
        Recipe.from_dict(data)


def test_a_recipe_without_the_field_gets_lanczos():
    data = recipe().to_dict()
    for stage in data["stages"]:
        del stage["upscaler"]
    assert {s.upscaler for s in Recipe.from_dict(data).stages} == {"Lanczos"}


# --- model upscalers (spandrel) ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spandrel():
    pytest.importorskip("torch")
    if importlib.util.find_spec("spandrel") is None:
        pytest.skip("spandrel is not installed (pip install --no-deps spandrel einops)")
    from tlok_workflow.backends.model_upscalers import _import_spandrel
    return _import_spandrel()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, spandrel):
    """A tiny random-weight ESRGAN (4x) saved as a .pth file, the way real ones are."""
    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2, scale=4)
    folder = tmp_path_factory.mktemp("ESRGAN")
    torch.save(net.state_dict(), folder / "tiny-4x.pth")
    torch.save({"not": torch.zeros(3)}, folder / "not-a-model.pth")
    (folder / "readme.txt").write_text("not listed")
    return folder


def test_spandrel_imports_without_leaving_a_torchvision_stand_in(spandrel):
    stand_ins = [name for name, module in sys.modules.items()
                 if name.split(".")[0] == "torchvision" and getattr(module, "__file__", None) is None]
    assert stand_ins == []


def test_model_files_are_listed_by_name_and_loaded_by_path(model_dir):
    from tlok_workflow.backends.model_upscalers import ModelUpscalers, load_model

    assert ModelUpscalers(model_dir).names() == ["not-a-model", "tiny-4x"]
    model = load_model(model_dir / "tiny-4x.pth")
    assert (model.architecture.name, model.scale) == ("ESRGAN", 4)


def test_a_file_that_is_not_an_upscaler_is_named_in_the_error(model_dir):
    from tlok_workflow.backends.model_upscalers import ModelUpscalers, UpscalerError

    upscalers = ModelUpscalers(model_dir)
    with pytest.raises(UpscalerError, match=r"not-a-model.pth: not an image upscaler model spandrel can load"):
        upscalers.upscale(noise(8, 8), (32, 32), "not-a-model")
    with pytest.raises(UpscalerError, match=r"upscaler 'gone': no such file in .*found: not-a-model, tiny-4x"):
        upscalers.upscale(noise(8, 8), (32, 32), "gone")


def test_the_model_scales_by_four_and_the_result_is_fitted_to_the_size(model_dir):
    from tlok_workflow.backends.model_upscalers import ModelUpscalers, load_model, run_model

    model = load_model(model_dir / "tiny-4x.pth")
    image = noise(40, 30)
    assert run_model(model, image).size == (160, 120)
    upscalers = ModelUpscalers(model_dir)
    twice = upscalers.upscale(image, (200, 150), "tiny-4x")            # 5x: the 4x model runs twice
    assert twice.size == (200, 150)
    once = upscalers.upscale(image, (80, 60), "tiny-4x")               # 2x: once, then Lanczos down
    assert once.tobytes() == run_model(model, image).resize((80, 60), Image.LANCZOS).tobytes()
    assert once.tobytes() != image.resize((80, 60), Image.LANCZOS).tobytes()
    same = upscalers.upscale(image, (40, 30), "tiny-4x")               # no enlargement: no model run
    assert same.tobytes() == image.tobytes()


def test_tiles_match_the_whole_image_away_from_the_borders(model_dir):
    from tlok_workflow.backends.model_upscalers import load_model, run_model

    model = load_model(model_dir / "tiny-4x.pth")
    image = noise(100, 90, seed=3)
    whole = np.asarray(run_model(model, image, tile=0), dtype=int)
    tiled = np.asarray(run_model(model, image, tile=32, overlap=16), dtype=int)
    seams = np.asarray(run_model(model, image, tile=32, overlap=0), dtype=int)
    inner = (slice(16, -16), slice(16, -16))
    assert np.abs(whole - tiled)[inner].max() <= 1                     # rounding only
    assert np.abs(whole - seams)[inner].max() > 8                      # without overlap the tiles show


def test_a_demo_chain_enlarges_with_the_model_upscaler(model_dir, tmp_path):
    pytest.importorskip("diffusers")
    from tlok_workflow.backends.diffusers_backend import DiffusersBackend

    backend = DiffusersBackend(device="cpu", upscalers_dir=model_dir)
    given = []
    generate = backend.generate
    backend.generate = lambda request, on_step: given.append(request.image) or generate(request, on_step)
    start = tmp_path / "start.png"
    noise(64, 64).save(start)
    r = recipe("tiny-4x", start_from_image=True, init_image=str(start))
    result = Runner(backend, PACK, tmp_path / "out", contact_sheets=False).run(r, make_items(r, 1, tmp_path / "out"))
    assert [o.status for o in result.outputs] == ["done", "done", "done"]
    assert [Image.open(o.path).size for o in result.outputs] == [(64, 64), (128, 128), (192, 192)]
    style = outputs.load_image(result.outputs[0].path)
    expected = backend.model_upscalers.upscale(style, (128, 128), "tiny-4x")
    assert given[1].tobytes() == expected.tobytes() != style.resize((128, 128), Image.LANCZOS).tobytes()
    assert "Upscaler: tiny-4x" in outputs.read_png_text(result.outputs[1].path)["parameters"]


@pytest.mark.parametrize("keys, what", [
    (["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight"],
     "its keys look like a Stable Diffusion checkpoint (model.diffusion_model.input_blocks.0.0.weight, …)"),
    (["control_model.input_hint_block.0.weight", "control_model.zero_convs.0.0.weight"],
     "its keys look like a ControlNet (control_model.input_hint_block.0.weight, …)"),
    (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"], "its keys look like a LoRA"),
    (["alpha", "beta", "delta", "gamma"], "unknown weights: 4 tensor(s) (alpha, beta, delta, …)"),
])
def test_a_safetensors_that_is_not_an_upscaler_says_what_it_is(spandrel, tmp_path, capsys, keys, what):
    import torch
    from safetensors.torch import save_file

    from tlok_workflow import cli

    save_file({key: torch.zeros(2, 2) for key in keys}, str(tmp_path / "other.safetensors"))
    start = tmp_path / "start.png"
    noise(64, 64).save(start)
    code = cli.main(["run", "--demo", "--init-image", str(start), "--face-after", "off", "--no-sheet", "--seed", "1",
                     "--upscalers", str(tmp_path), "--upscaler", "other", "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert error.startswith(f"tlok_workflow: error: upscaler {tmp_path / 'other.safetensors'}: not an image upscaler")
    assert what in error
