"""The `webui` fixture: the WebUI stand-in's `modules` on sys.path for one test, with fresh state.

Only tests that ask for the fixture see `modules`; it is never on the normal import path. The models folder holds
the two checkpoints and the weights of the two RealESRGAN upscalers (models/ESRGAN is empty).
"""
import shutil
import sys
from pathlib import Path

import pytest

STUB = Path(__file__).resolve().parent
BASE = "v1-5-pruned-emaonly.safetensors"
STYLE = "4elements-diffusion.ckpt"


@pytest.fixture
def webui(tmp_path, monkeypatch):
    monkeypatch.setenv("TLOK_STUB_DATA", str(tmp_path / "webui"))
    monkeypatch.syspath_prepend(str(STUB))
    from modules import (errors, extra_networks, images, infotext_utils, modelloader, paths_internal, processing,
                         progress, realesrgan_model, script_callbacks, sd_models, shared)
    try:  # the UI stand-ins need gradio
        from modules import call_queue, ui_common  # noqa: F401
    except ImportError:
        pass

    folder = Path(sd_models.model_path)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (BASE, STYLE):
        (folder / name).touch()
    sd_models.unhashed.clear()
    sd_models.list_models()
    sd_models.loads.clear()
    sd_models.model_data.sd_model = None
    sd_models.model_data.was_loaded_at_least_once = False
    shared.opts.data["sd_model_checkpoint"] = sd_models.get_closet_checkpoint_match(BASE).title
    shared.opts.data.pop("res_step", None)   # A1111's options (Forge Neo's, set by the tests that stand for Neo)
    shared.opts.data_labels.pop("res_step", None)
    shared.opts.data["interrupt_after_current"] = True
    shared.state.__dict__.clear()   # back to the class defaults (processing holds this very object)
    processing.calls.clear()
    images.saved.clear()
    images.resized.clear()
    for folder, files in (("RealESRGAN", ["RealESRGAN_x4plus.pth", "RealESRGAN_x4plus_anime_6B.pth"]), ("ESRGAN", [])):
        upscalers = Path(paths_internal.models_path) / folder
        shutil.rmtree(upscalers, ignore_errors=True)
        upscalers.mkdir(parents=True)
        for name in files:
            (upscalers / name).write_bytes(b"old-format pickle")   # passes the stand-in's pickle check
    modelloader.load_upscalers()
    realesrgan_model.runs.clear()
    errors.reported.clear()
    extra_networks.activated.clear()
    processing.on_sampling_step.clear()
    infotext_utils.reset()
    script_callbacks.clear_callbacks()
    script_callbacks.reported.clear()
    progress.finished_tasks.clear()
    for key in [k for k in shared.opts.data if k.startswith("tlok_workflow_")]:
        del shared.opts.data[key]
    shared.opts.data["tlok_workflow_outdir"] = str(tmp_path / "out")
    yield sys.modules["modules"]
    paths_internal  # noqa: B018 (imported so the data folder exists before sd_models)


def title(name: str) -> str:
    from modules import sd_models
    return sd_models.get_closet_checkpoint_match(name).title



def _tab_scripts():
    """Two other always-on scripts of the img2img tab, as a user has them."""
    from modules import scripts

    class ScriptSampler(scripts.ScriptBuiltinUI):
        """As modules/processing_scripts/sampler.py: UI-only; its setup writes the tab's steps and sampler into p."""
        def title(self):
            return "Sampler"

        def setup(self, p, steps, sampler_name):
            p.steps, p.sampler_name = steps, sampler_name

    class DynamicPrompts(scripts.Script):
        """An always-on extension script (as Dynamic Prompts is): run with the tab's arguments, it rewrites the
        prompt."""
        def title(self):
            return "Dynamic Prompts"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def process(self, p, enabled):
            if enabled:
                p.prompt = "rewritten"

    return ScriptSampler(), DynamicPrompts()


@pytest.fixture(params=["a1111", "forge"])
def controlnet(request, webui, monkeypatch):
    """The WebUI stand-in with a ControlNet: sd-webui-controlnet on A1111, or Forge's built-in one. models/ControlNet
    holds control_v11f1e_sd15_tile.pth (the keys of an SD 1.5 ControlNet that the check reads, tiny tensors) and an
    SDXL one; the img2img ScriptRunner holds the built-in sampler script, an always-on prompt script and the
    ControlNet script, with their argument slices. Yields the ControlNet script's class (its `runs`)."""
    import torch

    from modules import scripts

    folder = Path(webui.paths_internal.models_path) / "ControlNet"
    folder.mkdir(parents=True, exist_ok=True)
    keys = {"control_model.input_hint_block.0.weight": (16, 3, 3, 3),
            "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}
    torch.save({k: torch.zeros(shape) for k, shape in keys.items()}, folder / "control_v11f1e_sd15_tile.pth")
    keys["control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = (320, 2048)
    torch.save({k: torch.zeros(shape) for k, shape in keys.items()}, folder / "controlnet_sdxl_tile.pth")
    monkeypatch.syspath_prepend(str(STUB / f"{request.param}_controlnet"))
    if request.param == "a1111":
        from internal_controlnet import global_state
        global_state.update_cn_models()
    else:
        from lib_controlnet import global_state
        global_state.update_controlnet_filenames()
    from controlnet_script import ControlNetScript

    runner = scripts.ScriptRunner()
    for script, (start, end) in zip((*_tab_scripts(), ControlNetScript()), ((1, 3), (3, 4), (4, 7))):
        script.args_from, script.args_to, script.alwayson = start, end, True
        runner.scripts.append(script)
        runner.alwayson_scripts.append(script)
    monkeypatch.setattr(scripts, "scripts_img2img", runner)
    ControlNetScript.runs.clear()
    yield ControlNetScript
    for name in [m for m in sys.modules if m.split(".")[0] in ("internal_controlnet", "lib_controlnet",
                                                              "controlnet_script")]:
        del sys.modules[name]
