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
    from modules import (errors, images, infotext_utils, modelloader, paths_internal, processing, progress,
                         realesrgan_model, script_callbacks, sd_models, shared)
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
